"""Batches for the supervised trainer: the train split streamed through Ray Data or held in memory,
and the evaluation splits read shard by shard.

Training input (`TrainInput`), chosen by ``input_path``:

- ``"ray"``: the train split as a Ray Dataset of compact task rows (stored
  int8/16/32 types, widened per batch on the device), shuffled each epoch by
  block order and within windows of ``shuffle_buffer`` sessions, seeded by the
  trial's seed and the epoch. A split that takes at most ``CACHE_SHARE`` of
  the cluster's object store is read and split once and kept there
  (``cache_train="auto"``); bigger ones stream every epoch.
- ``"memory"``: the whole split as numpy arrays, shuffled per epoch (small
  data, where Ray Data's start-up per epoch costs more than the epoch itself).

Evaluation (`iter_split_batches`) reads a split's parquet shards in order
without Ray, so every trainer scores the same sessions in the same order.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from data_pipeline.dataset import iter_numpy_batches, split_halves, table_to_batch
from data_pipeline.ray_runtime import quiet_ray_data
from data_pipeline.schema import PREPARED_SESSION_SCHEMA

INPUT_PATHS = ("ray", "memory")
CACHE_MODES = ("auto", "always", "never")
STRING_KEYS = ("session_id", "date")
# Bytes of one session in a compact Ray block (stored per-position types, two masks, three int64 counts),
# and the share of the cluster's object store a trial may fill with its cached train split: several trials
# run at once, each with its own copy.
COMPACT_SESSION_BYTES = sum(
    field.type.list_size * field.type.value_type.bit_width // 8
    for field in PREPARED_SESSION_SCHEMA
    if pa.types.is_fixed_size_list(field.type)
) + 2 * 10 + 3 * 8
CACHE_SHARE = 0.05

_NARROW_INTS = (torch.int8, torch.uint8, torch.int16, torch.int32)


def _widen(tensor: torch.Tensor) -> torch.Tensor:
    """int64 for the narrow integer columns of a compact batch (after the copy to the device)."""
    return tensor.long() if tensor.dtype in _NARROW_INTS else tensor


def to_torch(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """A numpy task batch as tensors on `device` (string columns left out)."""
    return {k: torch.as_tensor(v).to(device, non_blocking=True) for k, v in batch.items() if k not in STRING_KEYS}


def iter_split_batches(dataset, split: str, protocol: str, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Task batches of one split in file order, read shard by shard (bounded memory, no Ray)."""
    for path in dataset.split_files(split):
        for record_batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
            batch = split_halves(table_to_batch(pa.Table.from_batches([record_batch])), protocol)
            if len(batch["length"]):
                yield batch


class TrainInput:
    """The train split of one trial as shuffled torch batches, epoch after epoch (see the module docstring)."""

    def __init__(self, dataset, protocol: str, input_path: str, batch_size: int, device: torch.device, seed: int,
                 shuffle_buffer: int = 4096, preserve_order: bool = False, cache_train: str = "auto"):
        if input_path not in INPUT_PATHS:
            raise ValueError(f"unknown input path {input_path!r}: choose one of {', '.join(INPUT_PATHS)}")
        if cache_train not in CACHE_MODES:
            raise ValueError(f"cache_train = {cache_train!r}: choose one of {', '.join(CACHE_MODES)}")
        self.dataset, self.protocol, self.input_path = dataset, protocol, input_path
        self.batch_size, self.device, self.seed = batch_size, device, seed
        self.shuffle_buffer, self.preserve_order, self.cache_train = shuffle_buffer, preserve_order, cache_train
        self._memory: dict[str, np.ndarray] | None = None
        self._ray_split = None  # streaming or materialised (cache_train); built on the first epoch

    def epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """One pass over the split in the order of `epoch` (a function of the seed and the epoch)."""
        epoch_seed = self.seed * 1000 + epoch
        if self.input_path == "memory":
            if self._memory is None:
                data = self.dataset.numpy_split("train", self.protocol)
                self._memory = {k: v for k, v in data.items() if k not in STRING_KEYS}
            for batch in iter_numpy_batches(self._memory, self.batch_size, shuffle=True, seed=epoch_seed):
                yield to_torch(batch, self.device)
            return
        yield from self._ray_epoch(epoch_seed)

    def _ray_epoch(self, epoch_seed: int) -> Iterator[dict[str, torch.Tensor]]:
        quiet_ray_data()
        ds = self._split().randomize_block_order(seed=epoch_seed)
        if self.preserve_order:
            ds.context.execution_options.preserve_order = True
        # Windowed shuffle: Ray Data hands over windows of `shuffle_buffer` sessions (blocks in random
        # order, read and split ahead in Ray workers while this thread trains); each window is permuted
        # here and cut into minibatches. Same mixing as a local shuffle buffer of that size, at a fraction
        # of the driver's CPU (Ray's local shuffle buffer re-concatenates per batch: 0.6x the in-memory
        # rate for a small LSTM on 2 cores, against 0.9x and more this way; BENCHMARKS.md).
        size = self.batch_size
        window = -(-max(self.shuffle_buffer, size) // size) * size  # a whole number of batches
        rng = np.random.default_rng(epoch_seed)
        for chunk in ds.iter_batches(batch_size=window, batch_format="numpy", prefetch_batches=2):
            n = len(chunk["length"])
            order = rng.permutation(n) if self.shuffle_buffer else np.arange(n)
            tensors = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in chunk.items()}
            for start in range(0, n, size):
                index = torch.from_numpy(order[start : start + size])
                yield {k: _widen(v.index_select(0, index).to(self.device, non_blocking=True)) for k, v in tensors.items()}

    def _split(self):
        """The train split as compact task rows on Ray Data: streaming, or materialised once (`cache_train`)."""
        if self._ray_split is None:
            ds = self.dataset.ray_dataset("train", self.protocol, compact=True).drop_columns(list(STRING_KEYS))
            if self.preserve_order:
                ds.context.execution_options.preserve_order = True
            self._ray_split = ds.materialize() if self._should_cache() else ds
        return self._ray_split

    def _should_cache(self) -> bool:
        if self.cache_train in ("always", "never"):
            return self.cache_train == "always"
        import ray

        from data_pipeline.ray_runtime import init_ray

        init_ray()  # what Ray Data would do on first use; the cluster's object store decides
        store = float(ray.cluster_resources().get("object_store_memory", 0.0))
        return self.dataset.num_sessions("train") * COMPACT_SESSION_BYTES <= CACHE_SHARE * store

    @property
    def cached(self) -> bool:
        """Whether the Ray train split is held in the object store (after the first epoch)."""
        from ray.data.dataset import MaterializedDataset

        return isinstance(self._ray_split, MaterializedDataset)
