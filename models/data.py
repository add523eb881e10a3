"""What a model knows of the prepared dataset it is built for (``DataInfo``), and the train split's
sessions for pre-training (``train_session_tracks``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

@dataclass
class DataInfo:
    """What a model needs to know about the prepared dataset it is built for."""

    vocab_size: int
    track_features: np.ndarray | None = None  # float32 [vocab_size, F], row = track id
    categories: dict = field(default_factory=dict)  # name -> list of values, code = index
    pretrained: dict = field(default_factory=dict)  # results of ModelSpec.pretrain

    @classmethod
    def from_dataset(cls, dataset, pretrained: dict | None = None) -> "DataInfo":
        """The DataInfo of a `data_pipeline.dataset.PreparedDataset`."""
        return cls(dataset.vocab_size, dataset.track_features, dict(dataset.categories), dict(pretrained or {}))


def train_session_tracks(dataset, max_sessions: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The train split's track ids (N, 20) int64 and lengths (N,), for pre-training.

    `dataset` is a PreparedDataset; `max_sessions` > 0 keeps only the first that many.
    """
    import pyarrow.parquet as pq

    from data_pipeline.dataset import table_to_batch

    tracks, lengths, total = [], [], 0
    for path in dataset.split_files("train"):
        batch = table_to_batch(pq.read_table(path, columns=["tracks", "length"]))
        length = batch["length"].astype(np.int64)
        tracks.append(batch["tracks"].astype(np.int64))
        lengths.append(length)
        total += len(length)
        if max_sessions and total >= max_sessions:
            break
    if not tracks:
        raise ValueError(f"{dataset.root}: the train split has no sessions to pre-train on; prepare the data again")
    tracks_all, lengths_all = np.concatenate(tracks), np.concatenate(lengths)
    if max_sessions:
        tracks_all, lengths_all = tracks_all[:max_sessions], lengths_all[:max_sessions]
    return tracks_all, lengths_all
