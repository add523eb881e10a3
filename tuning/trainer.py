"""Train and evaluate one configuration of one supervised model; the trainer contract every family meets.

``TrainerProtocol`` is what the search (``tuning/trainable.py``), ``tuning.train``
and ``tuning.predict`` ask of a family's trainer, whatever the family:
``Trainer`` here (the sequence models of ``models/``), ``rl.trainer.RLTrainer``
(DDPG). ``tuning.families`` says which class trains which family, and builds or
restores one (``make_trainer``, ``restore_trainer``):

    trainer = make_trainer("skip", "lstm", {"lr": 1e-3}, "data/prepared")
    for _ in range(5):
        trainer.train_epoch()          # {"epoch", "train_loss", "sessions_per_s", ...}
        trainer.evaluate("val")        # {"maa", "first_accuracy", "accuracy_at", ...}
    trainer.save("ckpt/")              # a directory that scores new raw data alone
    trainer = restore_trainer("ckpt/")

The supervised trainer reads its train split through ``tuning.batches``
(Ray Data or in memory), evaluates by reading a split's shards in order,
trains with Adam (the config's ``lr`` and ``weight_decay``), gradient clipping,
and CUDA with mixed precision when present. ``config`` holds the model config's
fields (the search-space names) and, optionally, the `TrainerOptions`.
Checkpoints follow ``models.checkpoint`` (plain JSON state, weights loaded with
``weights_only=True``, the dataset files needed to encode new data).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, runtime_checkable

import numpy as np
import torch

from data_pipeline.dataset import PROTOCOLS, is_uri, open_prepared
from data_pipeline.tasks import check_task, label_key
from models.checkpoint import (
    WEIGHTS_FILE,
    CheckpointError,
    load_array,
    load_weights,
    rebuild_trainer,
    resolve_device,
    save_trainer_state,
    save_weights,
)
from models.metrics import RANK_CUTOFF, evaluate_predictions, gather_predictions
from tuning.batches import CACHE_MODES, TrainInput, iter_split_batches, to_torch


@runtime_checkable
class TrainerProtocol(Protocol):
    """One configuration of one model family: train epochs, evaluate, predict, save, restore.

    Constructed as ``cls(task=, model=, config=, data_dir=, protocol=, device=, seed=,
    input_path=, cache_dir=)``; ``data_dir=None`` is allowed only with the restore
    path, for prediction. ``train_epoch`` returns at least ``epoch``,
    ``train_loss``, ``sessions_per_s``, ``sessions`` and ``seconds``; ``evaluate``
    the metrics of ``models.metrics.evaluate_predictions`` (with ``loss``);
    ``predict_batches`` ``pred``, ``truth``, ``mask`` ([N, 10] each), ``loss``
    and, for the seq task, ``top`` ([N, 10, 10]: the ten best tracks per position),
    joined with ``models.metrics.gather_predictions``.

    What every trainer does alike is written once, outside the trainers: the
    device (``models.checkpoint.resolve_device``), the label column
    (``data_pipeline.tasks.label_key``), the checkpoint layout and its checks
    (``models.checkpoint.save_trainer_state`` and ``rebuild_trainer``, which
    ``restore`` calls: plain JSON state, tensors loaded with ``weights_only=True``,
    the dataset files needed to encode new data).
    """

    task: str
    model_name: str
    protocol: str
    seed: int
    input_path: str
    epoch: int

    @property
    def num_parameters(self) -> int: ...

    def config_dict(self) -> dict: ...

    def train_epoch(self) -> dict: ...

    def evaluate(self, split: str = "val", beam_size: int | None = None) -> dict: ...

    def predict_batches(self, batches: Iterable[dict[str, np.ndarray]], beam_size: int | None = None) -> dict: ...

    def save(self, directory: str | Path) -> Path: ...

    @classmethod
    def restore(cls, directory: str | Path, data_dir=..., device: str = "auto") -> "TrainerProtocol": ...


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
    # epochs only reshuffle it. "auto": when it takes at most batches.CACHE_SHARE of the cluster's object
    # store (small data; a 3.3M-session split streams); "always"; "never" (re-read every epoch)
    cache_train: str = "auto"
    eval_batch_size: int = 1024
    amp: bool = True  # mixed precision on CUDA (no effect on CPU)
    show_progress: bool = False

    def __post_init__(self):
        if self.cache_train not in CACHE_MODES:
            raise ValueError(f"cache_train = {self.cache_train!r}: choose one of {', '.join(CACHE_MODES)}")


class NonFiniteLoss(RuntimeError):
    """Training produced a loss that is not a finite number: stop rather than train on garbage."""


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
    """One supervised model, one configuration: train epochs, evaluate splits, save and restore."""

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

        check_task(task)
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
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
        self.checkpoint_dir = _restore_from  # where it was restored from: the data files to save again

        torch.manual_seed(seed)
        np.random.seed(seed)
        if _restore_from is not None:
            saved = load_weights(_restore_from / WEIGHTS_FILE)
            self.pretrained = saved.get("pretrained", {})
            manifest = json.loads((_restore_from / "manifest.json").read_text())
            track_features = load_array(_restore_from / "track_features.npy")
            categories = json.loads((_restore_from / "categories.json").read_text())
        else:
            if self.dataset is None:
                raise ValueError("a data directory is needed to train a new model")
            self.pretrained = {}
            if self.spec.pretrain is not None:
                # <data>/cache, or a node-local folder when the data is at a URI
                cache = Path(cache_dir) if cache_dir is not None else self.dataset.cache_dir
                self.pretrained = self.spec.pretrain(self.model_config, self.dataset, cache) or {}
            manifest, track_features, categories = self.dataset.manifest, self.dataset.track_features, self.dataset.categories
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
        self.amp_dtype = None
        if self.device.type == "cuda" and self.options.amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.input = None
        if self.dataset is not None:
            self.input = TrainInput(
                self.dataset, protocol, input_path, self.batch_size, self.device, seed,
                shuffle_buffer=self.options.shuffle_buffer, preserve_order=self.options.preserve_order,
                cache_train=self.options.cache_train,
            )
        if _restore_from is not None:
            self._load_state(saved, _restore_from / WEIGHTS_FILE)

    def _load_state(self, saved: dict, path: Path) -> None:
        try:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.epoch = int(saved["epoch"])
            self.history = list(saved["history"])
            torch.set_rng_state(saved["torch_rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(
                f"{path}: does not fit the {self.model_name} {self.task} model its trainer.json describes ({first})"
            ) from None

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

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def train_epoch(self, max_seconds: float | None = None) -> dict:
        """One pass over the training split; returns epoch, train_loss, sessions_per_s, sessions, seconds.

        `max_seconds` cuts the pass short after that long (a throughput measurement on data too big
        for the time at hand; the result then says ``partial``).
        """
        from tqdm import tqdm

        if self.input is None:
            raise ValueError("this trainer has no data directory; restore it with data_dir=... to train")
        self.model.train()
        total_loss, total_weight, sessions = 0.0, 0, 0
        bar = tqdm(
            desc=f"{self.model_name} {self.task} epoch {self.epoch + 1}",
            unit="session",
            disable=not self.options.show_progress,
            dynamic_ncols=True,
        )
        start, cut = time.perf_counter(), False
        if self.epoch == 0:
            # every model of models/ ends in an OutputHead; its wide skip term (if any) is fitted first
            self.model.head.fit_wide(
                to_torch(batch, self.device)
                for batch in iter_split_batches(self.dataset, "train", self.protocol, self.options.eval_batch_size)
            )
        for batch in self.input.epoch(self.epoch):
            with self._autocast():
                _, loss = self.model(batch)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(
                    f"{self.model_name} {self.task}: the training loss became {float(loss)} in epoch {self.epoch + 1} "
                    f"after {sessions:,} sessions; lower lr (now {self.model_config.lr:g}) or check the "
                    "prepared data's track features for non-finite values"
                )
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
            if max_seconds is not None and time.perf_counter() - start >= max_seconds:
                cut = True
                break
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # the last steps' kernels count in the time
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
            "partial": cut,
        }
        self.history.append(dict(result))
        return result

    # -- evaluation ----------------------------------------------------------

    @torch.no_grad()
    def predict_batch(self, batch: dict[str, np.ndarray], beam_size: int | None = None) -> dict:
        """Predictions [B, 10] for one numpy task batch, the summed loss and its weight; for seq also the
        ten best tracks per position by the teacher-forced scores (``top``, [B, 10, 10])."""
        self.model.eval()
        tensors = to_torch(batch, self.device)
        beam = self.options.beam_size if beam_size is None else beam_size
        with self._autocast():
            logits, loss = self.model(tensors)
            pred = self.model.predict(tensors, beam_size=beam)
        weight = int(batch["out_mask"].sum())
        out = {
            "pred": pred.cpu().numpy().astype(np.int64),
            "loss_sum": float(loss) * weight if loss is not None else float("nan"),
            "weight": weight,
        }
        if self.task == "seq" and logits is not None:
            out["top"] = logits.float().topk(RANK_CUTOFF, dim=-1).indices.cpu().numpy().astype(np.int64)
        return out

    def predict_batches(self, batches, beam_size: int | None = None) -> dict:
        """Run the model over numpy task batches: pred, truth, mask ([N, 10] each), the mean loss and,
        for seq, top ([N, 10, 10])."""
        parts = []
        for batch in batches:
            part = self.predict_batch(batch, beam_size)
            part.update(truth=batch[label_key(self.task)], mask=batch["out_mask"])
            parts.append(part)
        return gather_predictions(parts)

    def evaluate_batches(self, batches, beam_size: int | None = None) -> dict:
        """Metrics over an iterable of numpy task batches (see models.metrics.evaluate_predictions)."""
        run = self.predict_batches(batches, beam_size)
        return evaluate_predictions(run["pred"], run["truth"], run["mask"], loss=run["loss"], top=run.get("top"))

    def evaluate(self, split: str = "val", beam_size: int | None = None) -> dict:
        """MAA, first_accuracy, accuracy_at, correct_histogram, loss, sessions (and the ranking metrics for seq)."""
        if self.dataset is None:
            raise ValueError("this trainer has no data directory; restore it with data_dir=... to evaluate")
        return self.evaluate_batches(
            iter_split_batches(self.dataset, split, self.protocol, self.options.eval_batch_size), beam_size
        )

    # -- checkpoints ---------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write a self-contained checkpoint directory (models.checkpoint: state, weights, data files)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_weights(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch,
                "history": self.history,
                "torch_rng": torch.get_rng_state(),
                "pretrained": self.pretrained,
            },
            directory / WEIGHTS_FILE,
        )
        data_source = self.dataset if self.dataset is not None else self.checkpoint_dir
        save_trainer_state(directory, self, data_source, self.data_dir, self.fingerprint)
        return directory

    @classmethod
    def restore(cls, directory: str | Path, data_dir: str | Path | None = "saved", device: str = "auto") -> "Trainer":
        """Rebuild a trainer from `save`'s directory.

        `data_dir` defaults to the directory it was trained on, when it still
        exists; pass None to restore for prediction only (no train/evaluate).
        """
        return rebuild_trainer(cls, directory, data_dir, device, files=(WEIGHTS_FILE,))


def finite_or_none(value):
    """`value` as a float when it is a finite number, else None (for JSON and Tune results)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
