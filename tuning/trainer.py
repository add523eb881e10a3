"""Train and evaluate one configuration of one model on a prepared dataset.

``make_trainer(task, model, config, data_dir, ...)`` returns a ``Trainer``:

    trainer = make_trainer("skip", "lstm", {"lr": 1e-3}, "data/prepared")
    for _ in range(5):
        trainer.train_epoch()          # {"epoch", "train_loss", "sessions_per_s", ...}
        trainer.evaluate("val")        # {"maa", "first_accuracy", "accuracy_at", ...}
    trainer.save("ckpt/")              # a directory that scores new raw data alone
    trainer = Trainer.restore("ckpt/")

The training split streams through Ray Data (``input_path="ray"``, shuffled
each epoch by block order and within windows of ``shuffle_buffer`` sessions,
seeded by seed and epoch) or comes from
in-memory arrays (``input_path="memory"``, for small data and as the reference
of the throughput benchmark). Evaluation reads the split's parquet shards in
order, batch by batch, without Ray. Adam with the config's ``lr`` and
``weight_decay``, gradient clipping, CUDA with mixed precision when present.

``config`` holds the model config's fields (the search-space names) and,
optionally, the trainer options of ``TrainerOptions``. ``model == "ddpg"``
returns ``rl.trainer.RLTrainer``, which has the same interface.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from data_pipeline.dataset import PROTOCOLS, is_uri, iter_numpy_batches, open_prepared, split_halves, table_to_batch
from data_pipeline.ray_runtime import quiet_ray_data
from data_pipeline.schema import PREPARED_SESSION_SCHEMA
from models.baselines import get_baseline
from models.metrics import evaluate_predictions

TASKS = ("skip", "seq")
INPUT_PATHS = ("ray", "memory")
CHECKPOINT_FILE = "checkpoint.pt"
STATE_FILE = "trainer.json"
# What a checkpoint copies from the prepared directory, so that it can encode new raw data alone.
DATA_FILES = ("manifest.json", "vocab.parquet", "categories.json", "track_features.npy")
STRING_KEYS = ("session_id", "date")


@dataclass
class TrainerOptions:
    """Training-loop knobs that are not model hyperparameters (may also appear in `config`)."""

    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    beam_size: int = 1  # seq decoding at evaluation: 1 = greedy (the paper)
    shuffle_buffer: int = 4096  # Ray path: sessions per shuffled window (0: no shuffle within windows)
    # Ray path only: keep block order fixed while streaming, so an epoch's order depends on the seed alone
    # (Ray otherwise hands over whichever block is read first; costs some throughput)
    preserve_order: bool = False
    # Ray path: keep the read-and-split train split in Ray's object store after the first epoch, so later
    # epochs only reshuffle it. "auto": when it takes at most CACHE_SHARE of the cluster's object store
    # (small data; a 3.3M-session split streams); "always"; "never" (re-read every epoch)
    cache_train: str = "auto"
    eval_batch_size: int = 1024
    amp: bool = True  # mixed precision on CUDA (no effect on CPU)
    show_progress: bool = False

    def __post_init__(self):
        if self.cache_train not in CACHE_MODES:
            raise ValueError(f"cache_train = {self.cache_train!r}: choose one of {', '.join(CACHE_MODES)}")


# Bytes of one session in a compact Ray block (stored per-position types, two masks, three int64 counts),
# and the share of the cluster's object store a trial may fill with its cached train split: several trials
# run at once, each with its own copy.
COMPACT_SESSION_BYTES = sum(
    field.type.list_size * field.type.value_type.bit_width // 8
    for field in PREPARED_SESSION_SCHEMA
    if pa.types.is_fixed_size_list(field.type)
) + 2 * 10 + 3 * 8
CACHE_SHARE = 0.05
CACHE_MODES = ("auto", "always", "never")


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; errors name the choices."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}: choose cpu, cuda or auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(device)


_NARROW_INTS = (torch.int8, torch.uint8, torch.int16, torch.int32)


def _widen(tensor: torch.Tensor) -> torch.Tensor:
    """int64 for the narrow integer columns of a compact batch (after the copy to the device)."""
    return tensor.long() if tensor.dtype in _NARROW_INTS else tensor


def label_key(task: str) -> str:
    """The batch key a task predicts."""
    return "out_skip_2" if task == "skip" else "out_tracks"


def to_torch(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """A numpy task batch as tensors on `device` (string columns left out)."""
    return {
        k: torch.as_tensor(v).to(device, non_blocking=True)
        for k, v in batch.items()
        if k not in STRING_KEYS
    }


def iter_split_batches(dataset, split: str, protocol: str, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Task batches of one split in file order, read shard by shard (bounded memory, no Ray)."""
    for path in dataset.split_files(split):
        for record_batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
            batch = split_halves(table_to_batch(pa.Table.from_batches([record_batch])), protocol)
            if len(batch["length"]):
                yield batch


def split_config(model_name: str, config_cls, config: dict) -> tuple[object, TrainerOptions]:
    """Separate a flat config dict into the model config and the trainer options."""
    model_fields = {f.name for f in dataclasses.fields(config_cls)}
    option_fields = {f.name for f in dataclasses.fields(TrainerOptions)}
    unknown = sorted(set(config) - model_fields - option_fields)
    if unknown:
        raise ValueError(
            f"config keys {', '.join(unknown)} are not fields of {model_name}'s config "
            f"({', '.join(sorted(model_fields))}) nor trainer options ({', '.join(sorted(option_fields))})"
        )
    model_config = config_cls(**{k: v for k, v in config.items() if k in model_fields})
    options = TrainerOptions(**{k: v for k, v in config.items() if k in option_fields})
    return model_config, options


class Trainer:
    """One model, one configuration: train epochs, evaluate splits, save and restore."""

    def __init__(
        self,
        task: str,
        model: str,
        config: dict,
        data_dir: str | Path | None,
        protocol: str = "paper",
        device: str = "auto",
        seed: int = 0,
        input_path: str = "ray",
        cache_dir: str | Path | None = None,
        _restore_from: Path | None = None,
    ):
        from models.registry import DataInfo, get_model

        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
        if input_path not in INPUT_PATHS:
            raise ValueError(f"unknown input path {input_path!r}: choose one of {', '.join(INPUT_PATHS)}")
        self.spec = get_model(model)
        if task not in self.spec.tasks:
            raise ValueError(f"model {model!r} does not support task {task!r} (it supports {', '.join(self.spec.tasks)})")
        self.task, self.model_name, self.protocol = task, model, protocol
        self.seed, self.input_path = seed, input_path
        self.device = resolve_device(device)
        self.model_config, self.options = split_config(model, self.spec.config_cls, dict(config))
        # A URI (s3://, gs://, file://) stays a string: the dataset reads it through pyarrow.fs.
        self.data_dir = (data_dir if is_uri(data_dir) else Path(data_dir)) if data_dir is not None else None
        self.dataset = open_prepared(self.data_dir) if self.data_dir is not None else None
        self.epoch = 0
        self.history: list[dict] = []
        self._memory_train: dict[str, np.ndarray] | None = None
        self._train_split = None  # the Ray train split, streaming or materialised (cache_train); built once

        torch.manual_seed(seed)
        np.random.seed(seed)
        if _restore_from is not None:
            saved = load_weights(_restore_from / CHECKPOINT_FILE)
            self.pretrained = saved["pretrained"]
        else:
            if self.dataset is None:
                raise ValueError("a data directory is needed to train a new model")
            self.pretrained = {}
            if self.spec.pretrain is not None:
                # <data>/cache, or a node-local folder when the data is at a URI
                cache = Path(cache_dir) if cache_dir is not None else self.dataset.cache_dir
                self.pretrained = self.spec.pretrain(self.model_config, self.dataset, cache) or {}
        if _restore_from is not None:
            manifest = json.loads((_restore_from / "manifest.json").read_text())
            track_features = np.load(_restore_from / "track_features.npy")
            categories = json.loads((_restore_from / "categories.json").read_text())
        else:
            manifest, track_features = self.dataset.manifest, self.dataset.track_features
            categories = self.dataset.categories
        self.fingerprint = str(manifest.get("fingerprint"))
        self.info = DataInfo(
            vocab_size=int(manifest["vocab"]["size"]),
            track_features=track_features,
            categories=categories,
            pretrained=self.pretrained,
        )
        self.model = self.spec.build(self.model_config, task, self.info).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=float(self.model_config.lr),
            weight_decay=float(getattr(self.model_config, "weight_decay", 0.0)),
        )
        cuda = self.device.type == "cuda"
        self.amp_dtype = None
        if cuda and self.options.amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if _restore_from is not None:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.epoch = int(saved["epoch"])
            self.history = list(saved["history"])
            torch.set_rng_state(saved["torch_rng"])

    # -- facts ---------------------------------------------------------------

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def batch_size(self) -> int:
        return int(self.model_config.batch_size)

    def config_dict(self) -> dict:
        """The full configuration: model config fields and trainer options."""
        return {**dataclasses.asdict(self.model_config), **dataclasses.asdict(self.options)}

    # -- training ------------------------------------------------------------

    def _train_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch_seed = self.seed * 1000 + self.epoch
        if self.input_path == "memory":
            if self._memory_train is None:
                data = self.dataset.numpy_split("train", self.protocol)
                self._memory_train = {k: v for k, v in data.items() if k not in STRING_KEYS}
            for batch in iter_numpy_batches(self._memory_train, self.batch_size, shuffle=True, seed=epoch_seed):
                yield to_torch(batch, self.device)
            return
        quiet_ray_data()
        ds = self._ray_train_split()
        ds = ds.randomize_block_order(seed=epoch_seed)
        if self.options.preserve_order:
            ds.context.execution_options.preserve_order = True
        # Windowed shuffle: Ray Data hands over windows of `shuffle_buffer` sessions (blocks in random
        # order, read and split ahead in Ray workers while this thread trains); each window is permuted
        # here and cut into minibatches. Same mixing as a local shuffle buffer of that size, at a fraction
        # of the driver's CPU (Ray's local shuffle buffer re-concatenates per batch: 0.6x the in-memory
        # rate for a small LSTM on 2 cores, against 0.9x and more this way; BENCHMARKS.md).
        size = self.batch_size
        window = -(-max(self.options.shuffle_buffer, size) // size) * size  # a whole number of batches
        rng = np.random.default_rng(epoch_seed)
        for chunk in ds.iter_batches(batch_size=window, batch_format="numpy", prefetch_batches=2):
            n = len(chunk["length"])
            order = rng.permutation(n) if self.options.shuffle_buffer else np.arange(n)
            tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in chunk.items()}
            for start in range(0, n, size):
                index = torch.from_numpy(order[start : start + size])
                yield {k: _widen(v.index_select(0, index).to(self.device, non_blocking=True)) for k, v in tensors.items()}

    def _ray_train_split(self):
        """The train split as compact task rows on Ray Data, built on the first call: streaming (read
        again by every epoch) or materialised once, as `cache_train` says."""
        if self._train_split is None:
            ds = self.dataset.ray_dataset("train", self.protocol, compact=True).drop_columns(list(STRING_KEYS))
            if self.options.preserve_order:
                ds.context.execution_options.preserve_order = True
            self._train_split = ds.materialize() if self._should_cache_train() else ds
        return self._train_split

    def _should_cache_train(self) -> bool:
        mode = self.options.cache_train
        if mode in ("always", "never"):
            return mode == "always"
        import ray

        from data_pipeline.ray_runtime import init_ray

        init_ray()  # what Ray Data would do on first use; the cluster's object store decides
        store = float(ray.cluster_resources().get("object_store_memory", 0.0))
        return self.dataset.num_sessions("train") * COMPACT_SESSION_BYTES <= CACHE_SHARE * store

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def train_epoch(self) -> dict:
        """One pass over the training split; returns epoch, train_loss, sessions_per_s, sessions."""
        from tqdm import tqdm

        self.model.train()
        total_loss, total_weight, sessions = 0.0, 0, 0
        bar = tqdm(
            desc=f"{self.model_name} {self.task} epoch {self.epoch + 1}",
            unit="session",
            disable=not self.options.show_progress,
            dynamic_ncols=True,
        )
        start = time.perf_counter()
        for batch in self._train_batches():
            with self._autocast():
                _, loss = self.model(batch)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.options.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.options.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            n = int(batch["length"].shape[0])
            weight = int(batch["out_mask"].sum())
            total_loss += float(loss.detach()) * weight
            total_weight += weight
            sessions += n
            bar.update(n)
            bar.set_postfix(loss=f"{total_loss / max(total_weight, 1):.4f}", refresh=False)
        elapsed = time.perf_counter() - start
        bar.close()
        if sessions == 0:
            raise ValueError(
                f"{self.dataset.root}: the train split has no session under the {self.protocol!r} protocol "
                "(the paper protocol keeps only 20-track sessions without unknown tracks); "
                "try --protocol challenge or prepare more data"
            )
        self.epoch += 1
        result = {
            "epoch": self.epoch,
            "train_loss": total_loss / max(total_weight, 1),
            "sessions_per_s": sessions / elapsed if elapsed > 0 else float("inf"),
            "sessions": sessions,
            "seconds": elapsed,
        }
        self.history.append(dict(result))
        return result

    # -- evaluation ----------------------------------------------------------

    @torch.no_grad()
    def predict_batch(self, batch: dict[str, np.ndarray], beam_size: int | None = None) -> tuple[np.ndarray, float, int]:
        """Predictions [B, 10] for one numpy task batch, with the summed loss and its weight."""
        self.model.eval()
        tensors = to_torch(batch, self.device)
        beam = self.options.beam_size if beam_size is None else beam_size
        with self._autocast():
            _, loss = self.model(tensors)
            pred = self.model.predict(tensors, beam_size=beam)
        weight = int(batch["out_mask"].sum())
        loss_sum = float(loss) * weight if loss is not None else float("nan")
        return pred.cpu().numpy().astype(np.int64), loss_sum, weight

    def predict_batches(self, batches, beam_size: int | None = None) -> dict:
        """Run the model over numpy task batches: pred, truth, mask ([N, 10] each) and the mean loss."""
        preds, truths, masks = [], [], []
        loss_sum, weight = 0.0, 0
        for batch in batches:
            pred, batch_loss, batch_weight = self.predict_batch(batch, beam_size)
            preds.append(pred)
            truths.append(batch[label_key(self.task)])
            masks.append(batch["out_mask"])
            loss_sum += batch_loss
            weight += batch_weight
        if not preds:
            empty = np.zeros((0, 10), np.int64)
            return {"pred": empty, "truth": empty, "mask": empty.astype(bool), "loss": float("nan")}
        return {
            "pred": np.concatenate(preds),
            "truth": np.concatenate(truths),
            "mask": np.concatenate(masks),
            "loss": loss_sum / max(weight, 1),
        }

    def evaluate_batches(self, batches, beam_size: int | None = None) -> dict:
        """Metrics over an iterable of numpy task batches (see models.metrics.evaluate_predictions)."""
        run = self.predict_batches(batches, beam_size)
        return evaluate_predictions(run["pred"], run["truth"], run["mask"], loss=run["loss"])

    def evaluate(self, split: str = "val", beam_size: int | None = None) -> dict:
        """MAA, first_accuracy, accuracy_at, correct_histogram, loss, sessions on `split`."""
        if self.dataset is None:
            raise ValueError("this trainer has no data directory; restore it with data_dir=... to evaluate")
        return self.evaluate_batches(
            iter_split_batches(self.dataset, split, self.protocol, self.options.eval_batch_size), beam_size
        )

    # -- checkpoints ---------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write a self-contained checkpoint directory (model, optimizer, config, data files)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        source = self.data_dir if self.dataset is not None else getattr(self, "_checkpoint_dir", None)
        for name in DATA_FILES:
            if source is not None and is_uri(source):
                (directory / name).write_bytes(self.dataset.read_bytes(name))
            elif source is not None and (source / name).resolve() != (directory / name).resolve():
                shutil.copyfile(source / name, directory / name)
        torch.save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch,
                "history": self.history,
                "torch_rng": torch.get_rng_state(),
                # tensors only (numpy word2vec vectors too), so that restore can load with weights_only=True
                "pretrained": {k: _as_tensors(v) for k, v in self.pretrained.items()},
            },
            directory / CHECKPOINT_FILE,
        )
        state = {
            "task": self.task,
            "model": self.model_name,
            "config": self.config_dict(),
            "protocol": self.protocol,
            "seed": self.seed,
            "input_path": self.input_path,
            "epoch": self.epoch,
            "data_dir": _data_dir_str(self.data_dir),
            "data_fingerprint": self.fingerprint,
            "num_parameters": self.num_parameters,
        }
        (directory / STATE_FILE).write_text(json.dumps(state, indent=2))
        return directory

    @classmethod
    def restore(cls, directory: str | Path, data_dir: str | Path | None = "saved", device: str = "auto") -> "Trainer":
        """Rebuild a trainer from `save`'s directory.

        `data_dir` defaults to the directory it was trained on, when it still
        exists; pass None to restore for prediction only (no train/evaluate).
        """
        directory = Path(directory)
        if not (directory / STATE_FILE).exists() or not (directory / CHECKPOINT_FILE).exists():
            raise FileNotFoundError(
                f"{directory}: not a checkpoint directory (needs {STATE_FILE} and {CHECKPOINT_FILE}, "
                "written by Trainer.save / python -m tuning.train)"
            )
        state = json.loads((directory / STATE_FILE).read_text())
        if data_dir == "saved":
            saved = state.get("data_dir")
            data_dir = saved if saved and _has_manifest(saved) else None
        trainer = cls(
            state["task"],
            state["model"],
            state["config"],
            data_dir,
            protocol=state["protocol"],
            device=device,
            seed=state["seed"],
            input_path=state["input_path"],
            _restore_from=directory,
        )
        trainer._checkpoint_dir = directory
        return trainer


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded safely; the message names the file."""


def load_weights(path: Path) -> dict:
    """A checkpoint.pt as plain data: tensors, numbers, strings, lists and dicts, nothing else.

    ``weights_only=True`` makes torch refuse any pickled object that is not one of
    those, so a checkpoint from elsewhere cannot run code when it is loaded.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - truncated, foreign or malicious files all end here
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path}: not a checkpoint this project wrote, or damaged ({reason}); "
            "only tensors and plain data are loaded from checkpoints"
        ) from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: expected a dict of weights, found {type(saved).__name__}")
    return saved


def _as_tensors(value):
    """Pre-trained weights as tensors (a numpy array becomes one; a state dict keeps its tensors)."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, dict):
        return {k: _as_tensors(v) for k, v in value.items()}
    return value


def _data_dir_str(data_dir: str | Path | None) -> str | None:
    """How a checkpoint records its data directory: an absolute path, or the URI as given."""
    if data_dir is None:
        return None
    return data_dir if is_uri(data_dir) else str(Path(data_dir).resolve())


def _has_manifest(data_dir: str) -> bool:
    """Whether a prepared dataset's manifest is still at `data_dir` (a path or a URI)."""
    if not is_uri(data_dir):
        return Path(data_dir, "manifest.json").exists()
    from pyarrow import fs as pafs

    try:
        filesystem, base = pafs.FileSystem.from_uri(data_dir)
        return filesystem.get_file_info(f"{base.rstrip('/')}/manifest.json").type == pafs.FileType.File
    except (pa.ArrowException, OSError, ValueError):
        return False


def make_trainer(
    task: str,
    model: str,
    config: dict,
    data_dir: str | Path,
    protocol: str = "paper",
    device: str = "auto",
    seed: int = 0,
    input_path: str = "ray",
    cache_dir: str | Path | None = None,
):
    """A Trainer (or rl.trainer.RLTrainer for model 'ddpg') for one configuration."""
    kwargs = dict(
        task=task,
        model=model,
        config=config,
        data_dir=data_dir,
        protocol=protocol,
        device=device,
        seed=seed,
        input_path=input_path,
        cache_dir=cache_dir,
    )
    if model == "ddpg":
        from rl.trainer import RLTrainer

        return RLTrainer(**kwargs)
    return Trainer(**kwargs)


def evaluate_baseline(task: str, name: str, data_dir: str | Path, split: str = "val", protocol: str = "paper") -> dict:
    """Fit baseline `name` on the train split and score it on `split` (no loss)."""
    dataset = open_prepared(data_dir)
    baseline = get_baseline(task, name).fit(dataset.numpy_split("train", protocol), vocab_size=dataset.vocab_size)
    data = dataset.numpy_split(split, protocol)
    pred = baseline.predict(data) if len(data["length"]) else np.zeros((0, 10), np.int64)
    return evaluate_predictions(pred, data[label_key(task)], data["out_mask"])
