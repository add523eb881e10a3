"""word2vec track vectors (paper 2.1.2): each training session is a document,
its tracks are the words; gensim's Word2Vec with window 10 and 100 dimensions.

Pre-training is its own step, cached on disk by dataset fingerprint and
parameters, so every trial of a search reuses one run. ``lstm_w2v`` and
``bigru`` initialise their track embeddings from these vectors.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_pipeline.schema import FIRST_TRACK_ID, PAD_ID
from models.cache import cache_key, cached
from models.data import train_session_tracks

log = logging.getLogger(__name__)


@dataclass
class Word2VecOptions:
    """Config fields of the families whose track embedding starts from word2vec (dim = embedding_dim)."""

    use_pretrained: bool = True  # False: random initial embedding (an ablation)
    w2v_window: int = 10
    w2v_epochs: int = 5


def _stable_hash(text: str) -> int:
    # gensim seeds each word's initial vector with hashfxn(word + seed); Python's hash()
    # changes per process, which would make the vectors differ from run to run.
    return zlib.crc32(text.encode())


def training_sentences(dataset) -> list[list[str]]:
    """The train split's sessions as lists of track ids (as strings), out-of-vocabulary tracks left out."""
    tracks, lengths = train_session_tracks(dataset)
    sentences = ([str(t) for t in row[:length] if t >= FIRST_TRACK_ID] for row, length in zip(tracks, lengths))
    return [s for s in sentences if s]


def train_word2vec(
    dataset,
    dim: int = 100,
    window: int = 10,
    epochs: int = 5,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    workers: int = 1,
) -> np.ndarray:
    """Track vectors float32 [vocab_size, dim], row = track id.

    Skip-gram on the train split of `dataset` (a PreparedDataset). Tracks that
    never occur in training and the reserved ids get small random vectors
    (row PAD_ID is zero). With `cache_dir` the result is stored as
    ``word2vec-<key>.npy`` and a later call with the same dataset and
    parameters loads it. ``workers=1`` makes the result reproducible.
    """
    if cache_dir is None:
        return _word2vec(dataset, dim, window, epochs, seed, workers)
    key = cache_key(dataset.fingerprint, dim=dim, window=window, epochs=epochs, seed=seed, sg=1, min_count=1)
    return cached(
        Path(cache_dir) / f"word2vec-{key}.npy",
        lambda: _word2vec(dataset, dim, window, epochs, seed, workers),
        save=lambda vectors, tmp: np.save(tmp, vectors, allow_pickle=False),
        load=lambda path: np.load(path, allow_pickle=False),
    )


def _word2vec(dataset, dim: int, window: int, epochs: int, seed: int, workers: int) -> np.ndarray:
    from gensim.models import Word2Vec

    sentences = training_sentences(dataset)
    if not sentences:
        raise ValueError(f"{dataset.root}: the train split has no sessions to train word2vec on")
    log.info("word2vec: training on %d sessions (dim %d, window %d, %d epochs)", len(sentences), dim, window, epochs)
    model = Word2Vec(
        sentences,
        vector_size=dim,
        window=window,
        min_count=1,
        sg=1,
        epochs=epochs,
        seed=seed,
        workers=workers,
        hashfxn=_stable_hash,
    )
    rng = np.random.default_rng(seed)
    vectors = (rng.standard_normal((dataset.vocab_size, dim)) * 0.01).astype(np.float32)
    for word, index in model.wv.key_to_index.items():
        vectors[int(word)] = model.wv.vectors[index]
    vectors[PAD_ID] = 0.0
    return vectors


def pretrain_word2vec(config, dataset, cache_dir: str | Path) -> dict:
    """ModelSpec.pretrain for families with Word2VecOptions: {"word2vec": vectors} (or {} when not used)."""
    if not config.use_pretrained:
        return {}
    vectors = train_word2vec(
        dataset, dim=config.embedding_dim, window=config.w2v_window, epochs=config.w2v_epochs, cache_dir=cache_dir
    )
    return {"word2vec": vectors}


def pretrained_vectors(config, info) -> np.ndarray | None:
    """The word2vec vectors a model should start from, or None; a clear error when pre-training was skipped."""
    if not config.use_pretrained:
        return None
    if "word2vec" not in info.pretrained:
        raise ValueError(
            f"{type(config).__name__}.use_pretrained is set but DataInfo.pretrained has no 'word2vec' vectors: "
            "run the model's ModelSpec.pretrain(config, dataset, cache_dir) first and pass its result as "
            "DataInfo.pretrained, or set use_pretrained=False."
        )
    return info.pretrained["word2vec"]
