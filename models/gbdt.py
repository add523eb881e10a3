"""A gradient-boosted peer for the skip task: LightGBM on hand-made session features (no sequence model).

Strong simple baselines are the classic finding of recommender-systems
reproducibility studies; on MSSD skip prediction a small GBDT on a dozen
session features is such a baseline. This family puts it in the leaderboard,
searched like the others.

One row per second-half position (only real positions) with features built
from the first half and from the track to be played, never from a second-half
label (`session_features`):

- where: the position, both half lengths, the position's share of the second half;
- the first half's behaviour: skip_2 mean, last, second-to-last and count in the
  last three; the last and mean of skip_1, skip_3, not_skipped and the 0/1
  interaction flags; seek counts; the last track's ``reason_end``,
  ``reason_start``, ``context_type`` (categorical) and hour;
- the track to be played: its standardised track features, whether it was
  already played in the first half, whether it is unknown (``<unk>``).

No target statistics (per-track skip rates) are used: on the real sample they
add nothing, and computed with a row's own label they leak.

`GBDTTrainer` meets ``tuning.trainer.TrainerProtocol``: an "epoch" adds
``trees_per_epoch`` boosting rounds to the model (LightGBM continues from the
booster it has), so ASHA can stop a configuration early like any other. A
position is predicted skipped when the model's probability passes 0.5.
Checkpoints hold the model as LightGBM's text format (no pickle).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_pipeline.dataset import HALF_LENGTH, PROTOCOLS, open_prepared
from data_pipeline.schema import FIRST_TRACK_ID, UNK_ID
from data_pipeline.tasks import check_task, label_key
from models.checkpoint import DATA_FILES, CheckpointError, load_array, read_state, write_state
from models.metrics import evaluate_predictions

MODEL_FILE = "model.txt"
FLAGS = ("skip_1", "skip_3", "not_skipped", "context_switch", "no_pause_before_play", "short_pause_before_play",
         "long_pause_before_play", "is_shuffle", "premium")
COUNTS = ("n_seekfwd", "n_seekback")
CATEGORICAL = ("reason_end", "reason_start", "context_type")


@dataclass
class GBDTConfig:
    """LightGBM's knobs that the search draws, plus how much training data to use."""

    num_leaves: int = 15
    trees_per_epoch: int = 50  # boosting rounds added by each epoch
    learning_rate: float = 0.05
    min_child_samples: int = 50
    subsample: float = 0.8  # bagging fraction (rows per tree)
    colsample: float = 0.8  # feature fraction (columns per tree)
    reg_lambda: float = 1.0  # L2 on leaf values
    max_train_sessions: int = 500_000  # a sample of the train split's sessions (0: all); rows are held in memory
    seed: int = 0

    def __post_init__(self):
        for name in ("num_leaves", "trees_per_epoch", "min_child_samples"):
            if getattr(self, name) < 1 or (name == "num_leaves" and self.num_leaves < 2):
                raise ValueError(f"GBDTConfig.{name} = {getattr(self, name)}: too small")
        for name in ("subsample", "colsample"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"GBDTConfig.{name} = {getattr(self, name)}: must be in (0, 1]")
        if self.learning_rate <= 0:
            raise ValueError(f"GBDTConfig.learning_rate = {self.learning_rate}: must be positive")

    def lightgbm_params(self) -> dict:
        return {
            "objective": "binary",
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_child_samples": self.min_child_samples,
            "bagging_fraction": self.subsample,
            "bagging_freq": 1 if self.subsample < 1.0 else 0,
            "feature_fraction": self.colsample,
            "lambda_l2": self.reg_lambda,
            "seed": self.seed,
            "deterministic": True,
            "verbosity": -1,
        }


def feature_names(num_track_features: int) -> list[str]:
    names = ["position", "n_in", "n_out", "position_share", "skip_2_mean", "skip_2_last", "skip_2_before_last",
             "skips_in_last_3"]
    for name in FLAGS:
        names += [f"{name}_last", f"{name}_mean"]
    for name in COUNTS:
        names += [f"log_{name}_last", f"log_{name}_mean"]
    names += [f"{name}_last" for name in CATEGORICAL] + ["hour_of_day_last", "track_in_first_half", "track_unknown"]
    return names + [f"track_feature_{i}" for i in range(num_track_features)]


def session_features(batch: dict[str, np.ndarray], track_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X float32 [rows, features], (session, position) index int64 [rows, 2]) over every real second-half position."""
    n = len(batch["n_in"])
    in_mask = batch["in_mask"].astype(np.float32)
    n_in = np.maximum(batch["n_in"], 1)
    rows = np.arange(n)
    last, before = n_in - 1, np.maximum(n_in - 2, 0)
    filled = np.maximum(in_mask.sum(1), 1.0)

    def last_and_mean(values: np.ndarray) -> list[np.ndarray]:
        values = values.astype(np.float32)
        return [values[rows, last], (values * in_mask).sum(1) / filled]

    skips = batch["in_skip_2"].astype(np.float32)
    recent = (np.arange(HALF_LENGTH)[None, :] >= (n_in - 3)[:, None]) & (in_mask > 0)
    per_session = [
        (skips * in_mask).sum(1) / filled,
        skips[rows, last],
        np.where(batch["n_in"] >= 2, skips[rows, before], skips[rows, last]),
        (skips * recent).sum(1),
    ]
    for name in FLAGS:
        per_session += last_and_mean(batch[f"in_{name}"])
    for name in COUNTS:
        per_session += [np.log1p(np.maximum(v, 0)) for v in last_and_mean(batch[f"in_{name}"])]
    per_session += [batch[f"in_{name}"][rows, last].astype(np.float32) for name in CATEGORICAL]
    per_session.append(batch["in_hour_of_day"][rows, last].astype(np.float32))
    session_matrix = np.stack(per_session, axis=1)  # (B, S)

    session, position = np.nonzero(batch["out_mask"])
    tracks = batch["out_tracks"][session, position]
    played = ((batch["in_tracks"][session] == tracks[:, None]) & batch["in_mask"][session]).any(1) & (tracks >= FIRST_TRACK_ID)
    n_out = batch["n_out"][session].astype(np.float32)
    where = np.stack([position, batch["n_in"][session], n_out, (position + 1) / np.maximum(n_out, 1)], axis=1)
    X = np.concatenate([
        where.astype(np.float32),
        session_matrix[session],
        np.stack([played, tracks == UNK_ID], axis=1).astype(np.float32),
        np.asarray(track_features, dtype=np.float32)[tracks],
    ], axis=1)
    return X, np.stack([session, position], axis=1).astype(np.int64)


class GBDTTrainer:
    """One GBDT configuration on the skip task, behind the trainer contract (tuning.trainer.TrainerProtocol)."""

    def __init__(self, task: str, model: str = "gbdt", config: dict | None = None, data_dir=None, protocol: str = "paper",
                 device: str = "auto", seed: int = 0, input_path: str = "memory", cache_dir=None,
                 _restore_from: Path | None = None):
        check_task(task)
        if task != "skip":
            raise ValueError("model 'gbdt' does not support task 'seq' (it supports skip)")
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
        known = {f.name for f in dataclasses.fields(GBDTConfig)}
        unknown = sorted(set(config or {}) - known)
        if unknown:
            raise ValueError(f"config keys {', '.join(unknown)} are not fields of gbdt's config ({', '.join(sorted(known))})")
        self.task, self.model_name, self.protocol, self.seed, self.input_path = task, model, protocol, seed, input_path
        self.config = GBDTConfig(**{"seed": seed, **(config or {})})
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.dataset = open_prepared(self.data_dir) if self.data_dir is not None else None
        self.epoch = 0
        self.booster = None
        self._train = None
        if _restore_from is not None:
            import lightgbm

            self.track_features = load_array(_restore_from / "track_features.npy")
            self.fingerprint = json.loads((_restore_from / "manifest.json").read_text()).get("fingerprint")
            try:
                self.booster = lightgbm.Booster(model_file=str(_restore_from / MODEL_FILE))
            except Exception as error:  # noqa: BLE001 - LightGBM raises its own error type for a bad file
                raise CheckpointError(f"{_restore_from / MODEL_FILE}: not a LightGBM model ({error})") from None
        else:
            if self.dataset is None:
                raise ValueError("a data directory is needed to train a new model")
            self.track_features = self.dataset.track_features
            self.fingerprint = self.dataset.fingerprint

    @property
    def num_parameters(self) -> int:
        """Leaves in the model so far (the GBDT's count of fitted values)."""
        if self.booster is None:
            return 0
        dump = self.booster.dump_model()
        return int(sum(tree["num_leaves"] for tree in dump["tree_info"]))

    def config_dict(self) -> dict:
        return dataclasses.asdict(self.config)

    def _training_set(self):
        import lightgbm

        if self._train is None:
            data = self.dataset.numpy_split("train", self.protocol)
            limit = self.config.max_train_sessions
            if limit and len(data["length"]) > limit:
                keep = np.sort(np.random.default_rng(self.config.seed).choice(len(data["length"]), limit, replace=False))
                data = {k: v[keep] for k, v in data.items()}
            X, index = session_features(data, self.track_features)
            y = data[label_key(self.task)][index[:, 0], index[:, 1]]
            names = feature_names(self.track_features.shape[1])
            self._train = lightgbm.Dataset(X, label=y, feature_name=names, categorical_feature=[f"{c}_last" for c in CATEGORICAL],
                                           free_raw_data=False, params={"verbosity": -1})
            self._sessions = len(data["length"])
        return self._train

    def train_epoch(self) -> dict:
        import lightgbm

        if self.dataset is None:
            raise ValueError("this trainer has no data directory; restore it with data_dir=... to train")
        start = time.perf_counter()
        train = self._training_set()
        self.booster = lightgbm.train(self.config.lightgbm_params(), train, num_boost_round=self.config.trees_per_epoch,
                                      init_model=self.booster, keep_training_booster=True)
        elapsed = time.perf_counter() - start
        self.epoch += 1
        probability = self.booster.predict(train.get_data(), num_threads=0)
        label = train.get_label()
        loss = float(-np.mean(label * np.log(np.clip(probability, 1e-7, 1)) + (1 - label) * np.log(np.clip(1 - probability, 1e-7, 1))))
        return {"epoch": self.epoch, "train_loss": loss, "sessions_per_s": self._sessions / max(elapsed, 1e-9),
                "sessions": self._sessions, "seconds": elapsed}

    def predict_batches(self, batches, beam_size: int | None = None) -> dict:
        """pred, truth, mask ([N, 10] each) and loss (binary cross-entropy) over numpy task batches."""
        preds, truths, masks, loss_sum, weight = [], [], [], 0.0, 0
        for batch in batches:
            X, index = session_features(batch, self.track_features)
            probability = self.booster.predict(X) if len(X) else np.zeros(0)
            pred = np.zeros(batch["out_mask"].shape, np.int64)
            pred[index[:, 0], index[:, 1]] = probability > 0.5
            label = batch[label_key(self.task)][index[:, 0], index[:, 1]]
            p = np.clip(probability, 1e-7, 1 - 1e-7)
            loss_sum += float(-(label * np.log(p) + (1 - label) * np.log(1 - p)).sum())
            weight += len(label)
            preds.append(pred)
            truths.append(batch[label_key(self.task)])
            masks.append(batch["out_mask"])
        if not preds:
            empty = np.zeros((0, HALF_LENGTH), np.int64)
            return {"pred": empty, "truth": empty, "mask": empty.astype(bool), "loss": float("nan")}
        return {"pred": np.concatenate(preds), "truth": np.concatenate(truths), "mask": np.concatenate(masks),
                "loss": loss_sum / max(weight, 1)}

    def evaluate(self, split: str = "val", beam_size: int | None = None) -> dict:
        if self.dataset is None:
            raise ValueError("this trainer has no data directory; restore it with data_dir=... to evaluate")
        run = self.predict_batches([self.dataset.numpy_split(split, self.protocol)])
        return evaluate_predictions(run["pred"], run["truth"], run["mask"], loss=run["loss"])

    def save(self, directory) -> Path:
        import shutil

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        source = Path(self.dataset.root) if self.dataset is not None else self._checkpoint_dir
        for name in DATA_FILES:
            if (source / name).resolve() != (directory / name).resolve():
                shutil.copyfile(source / name, directory / name)
        self.booster.save_model(str(directory / MODEL_FILE))
        write_state(directory, {
            "task": self.task, "model": self.model_name, "config": self.config_dict(), "protocol": self.protocol,
            "seed": self.seed, "input_path": self.input_path, "epoch": self.epoch,
            "data_dir": str(self.data_dir.resolve()) if self.data_dir is not None else None,
            "data_fingerprint": self.fingerprint, "num_parameters": self.num_parameters,
        })
        return directory

    @classmethod
    def restore(cls, directory, data_dir="saved", device: str = "auto") -> "GBDTTrainer":
        directory = Path(directory)
        state = read_state(directory)
        if not (directory / MODEL_FILE).is_file():
            raise CheckpointError(f"{directory}: incomplete GBDT checkpoint, missing {MODEL_FILE}")
        if data_dir == "saved":
            saved = state.get("data_dir")
            data_dir = saved if saved and Path(saved, "manifest.json").exists() else None
        trainer = cls(state["task"], state["model"], state["config"], data_dir, protocol=state["protocol"],
                      seed=int(state.get("seed", 0)), input_path=state.get("input_path", "memory"), _restore_from=directory)
        trainer.epoch = int(state["epoch"])
        trainer._checkpoint_dir = directory
        return trainer


SEARCH_SPACE = {
    "num_leaves": ("choice", [7, 15, 31, 63]),
    "trees_per_epoch": ("choice", [25, 50, 100, 200]),
    "learning_rate": ("loguniform", 0.01, 0.3),
    "min_child_samples": ("lograndint", 5, 500),
    "subsample": ("uniform", 0.5, 1.0),
    "colsample": ("uniform", 0.3, 1.0),
    "reg_lambda": ("loguniform", 1e-3, 10.0),
}
# The paper has no GBDT, so no paper configuration; the start point is GBDTConfig's defaults (a small model:
# 15 leaves, 50 trees per epoch at rate 0.05).
PAPER_CONFIGS: dict = {}
START_CONFIGS = {"skip": {}}
