"""Train and evaluate one DDPG configuration with the interface of `tuning.trainer.Trainer`.

    trainer = RLTrainer(task="skip", config={"hidden_size": 32}, data_dir="data/prepared")
    trainer.train_epoch()       # iterations_per_epoch RLlib iterations on the train split's sessions
    trainer.evaluate("val")     # maa, first_accuracy, accuracy_at, correct_histogram, loss, sessions
    trainer.save("ckpt/"); trainer = RLTrainer.restore("ckpt/")

Training runs RLlib's DDPG (rl/ddpg) on the session-replay environment
(rl/env.py) with one local EnvRunner and a local Learner (CUDA when present).

Evaluation is batched and outside RLlib, with the actor alone and no noise,
and gives the supervised models' outputs:

- ``skip``: for each output track, the dot product of the action with the
  track's embedding; the track is predicted listened when it exceeds a
  threshold fitted on training sessions (the one that maximises per-position
  accuracy there), else skipped;
- ``seq``: the greedy 10-track sequence, each the best dot product over the
  whole vocabulary.

The state advances with the agent's own predictions (predicted-listened tracks
for ``skip``, the chosen tracks for ``seq``), never with second-half labels.
``loss`` is minus the mean reward per step the greedy policy would earn in the
environment on that split (fixed negatives), so lower is better as for the
supervised losses.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from data_pipeline.dataset import HALF_LENGTH, PROTOCOLS, open_prepared
from data_pipeline.schema import FIRST_TRACK_ID
from data_pipeline.tasks import check_task, label_key
from models.checkpoint import DATA_FILES, CheckpointError, read_state, resolve_device, write_state
from models.metrics import evaluate_predictions
from rl.env import (
    ENV_NAME,
    build_observation,
    initial_history,
    load_table,
    push_history,
    register,
    session_context,
    track_embedding_table,
)
from rl.negatives import NegativeSampler
from rl.spec import NAME, DDPGModelConfig

TABLE_FILE = "track_table.npy"
ALGORITHM_DIR = "algorithm"
THRESHOLD_SESSIONS = 2000  # training sessions used to fit the skip threshold
EVAL_NEGATIVES_SEED = 12345  # fixed negatives for the evaluation loss
EVAL_CHUNK = 1024  # sessions per evaluation batch


class RLTrainer:
    """One DDPG trial: same methods and result keys as `tuning.trainer.Trainer`."""

    def __init__(
        self,
        task: str,
        model: str = NAME,
        config: dict | None = None,
        data_dir: str | Path | None = None,
        protocol: str = "paper",
        device: str = "auto",
        seed: int = 0,
        input_path: str = "memory",
        cache_dir: str | Path | None = None,
        _restore_from: Path | None = None,
    ):
        if model != NAME:
            raise ValueError(f"RLTrainer trains model {NAME!r} only, got {model!r}")
        check_task(task)
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
        if data_dir is None:
            raise ValueError("DDPG replays sessions: give the prepared data directory (data_dir=...)")
        self.task, self.model_name, self.protocol = task, NAME, protocol
        self.seed, self.input_path = int(seed), input_path
        self.config = DDPGModelConfig.from_dict(dict(config or {}))
        self.data_dir = Path(data_dir)
        self.dataset = open_prepared(self.data_dir)
        cache = Path(cache_dir) if cache_dir is not None else self.data_dir / "cache"
        if _restore_from is not None:
            # The checkpoint may be a temporary directory (Tune): keep its table beside the cache.
            self.table_path = _keep_copy(Path(_restore_from) / TABLE_FILE, cache)
        else:
            self.table_path = track_embedding_table(self.dataset, self.config.embedding_size, self.seed, cache)
        self.table = load_table(self.table_path, self.dataset.vocab_size)
        self.device = resolve_device(device)
        self.epoch = 0
        self.skip_threshold = 0.0
        self._splits: dict[str, dict[str, np.ndarray]] = {}
        self.algo = self._build_algorithm()
        if _restore_from is not None:
            self.algo.restore_from_path(str(Path(_restore_from, ALGORITHM_DIR).resolve()))
            state = read_state(_restore_from)
            self.epoch = int(state["epoch"])
            self.skip_threshold = float(state["skip_threshold"])

    # -- RLlib ------------------------------------------------------------------

    def env_config(self, split: str = "train") -> dict:
        c = self.config
        return {
            "data_dir": str(self.data_dir.resolve()),
            "embeddings_path": str(Path(self.table_path).resolve()),
            "task": self.task,
            "split": split,
            "protocol": self.protocol,
            "negative_ratio": c.negative_ratio,
            "negative_sampling": c.negative_sampling,
            "seed": self.seed,
        }

    def rllib_config(self):
        """The RLlib `DDPGConfig` of this trial."""
        from rl.ddpg import DDPGConfig

        c = self.config
        return (
            DDPGConfig()
            .environment(ENV_NAME, env_config=self.env_config("train"))
            .framework("torch")
            .env_runners(num_env_runners=0, num_envs_per_env_runner=1, rollout_fragment_length=c.env_steps_per_update)
            .learners(num_learners=0, num_gpus_per_learner=1 if self.device.type == "cuda" else 0)
            .training(
                hidden_size=c.hidden_size,
                tau=c.tau,
                actor_lr=c.actor_lr,
                critic_lr=c.critic_lr,
                gamma=c.gamma,
                train_batch_size_per_learner=c.batch_size,
                replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": c.buffer_size},
                num_steps_sampled_before_learning_starts=c.learning_starts,
                noise_type=c.noise_type,
                noise_mask_initial=c.noise_mask_initial,
                noise_mask_decay=c.noise_mask_decay,
                gaussian_sigma=c.gaussian_sigma,
            )
            .reporting(min_sample_timesteps_per_iteration=c.steps_per_iteration, min_time_s_per_iteration=0)
            .debugging(seed=self.seed, log_level="ERROR")
        )

    def _build_algorithm(self):
        register()
        return self.rllib_config().build_algo()

    @property
    def module(self):
        """The Learner's DDPG module (actor, critic, targets)."""
        return self.algo.learner_group._learner.module["default_policy"]

    @property
    def num_parameters(self) -> int:
        """Trainable parameters of the actor, critic and shared state encoder (targets excluded)."""
        m = self.module
        return sum(p.numel() for net in (m.state_encoder, m.pi, m.qf) for p in net.parameters())

    def config_dict(self) -> dict:
        return self.config.to_dict()

    # -- training ---------------------------------------------------------------

    def train_epoch(self) -> dict:
        """`iterations_per_epoch` RLlib training iterations; returns epoch, train_loss, sessions_per_s, ..."""
        start = time.perf_counter()
        steps0, episodes0, updates0 = self._counters()
        result: dict = {}
        for iteration in range(self.config.iterations_per_epoch):
            result = self.algo.train()
            if self.config.show_progress:
                learner = result.get("learners", {}).get("default_policy", {})
                print(
                    f"ddpg {self.task} epoch {self.epoch + 1} iteration {iteration + 1}/{self.config.iterations_per_epoch}: "
                    f"{self._counters()[0]} env steps, return {result.get('env_runners', {}).get('episode_return_mean', float('nan')):.3f}, "
                    f"critic loss {learner.get('qf_loss', float('nan')):.4f}",
                    file=sys.stderr,
                    flush=True,
                )
        elapsed = time.perf_counter() - start
        steps, episodes, updates = self._counters()
        self.epoch += 1
        learner = result.get("learners", {}).get("default_policy", {})
        return {
            "epoch": self.epoch,
            "train_loss": float(learner.get("qf_loss", float("nan"))),  # critic TD loss of the last update
            "policy_loss": float(learner.get("policy_loss", float("nan"))),
            "sessions_per_s": (episodes - episodes0) / elapsed,
            "sessions": episodes - episodes0,
            "env_steps_per_s": (steps - steps0) / elapsed,
            "updates_per_s": (updates - updates0) / elapsed,
            "episode_return_mean": float(result.get("env_runners", {}).get("episode_return_mean", float("nan"))),
            "noise_mask_fraction": float(result.get("noise_mask_fraction", 0.0)),
        }

    def _counters(self) -> tuple[int, int, int]:
        """Lifetime (env steps, episodes, learner updates) so far."""
        from ray.rllib.utils.metrics import (
            ENV_RUNNER_RESULTS,
            LEARNER_RESULTS,
            NUM_ENV_STEPS_SAMPLED_LIFETIME,
            NUM_EPISODES_LIFETIME,
            NUM_TARGET_UPDATES,
        )

        peek = self.algo.metrics.peek
        return (
            int(peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)),
            int(peek((ENV_RUNNER_RESULTS, NUM_EPISODES_LIFETIME), default=0)),
            int(peek((LEARNER_RESULTS, "default_policy", NUM_TARGET_UPDATES), default=0)),  # one per update
        )

    # -- evaluation -------------------------------------------------------------

    def split(self, name: str) -> dict[str, np.ndarray]:
        if name not in self._splits:
            self._splits[name] = self.dataset.numpy_split(name, self.protocol)
        return self._splits[name]

    @torch.no_grad()
    def actions(self, obs: np.ndarray) -> np.ndarray:
        """The actor's noiseless actions for observations [B, obs] -> [B, D]."""
        from ray.rllib.core.columns import Columns

        module = self.module
        tensor = torch.from_numpy(obs).to(next(module.pi.parameters()).device)
        return module.forward_inference({Columns.OBS: tensor})[Columns.ACTIONS].float().cpu().numpy()

    def rollout(self, data: dict[str, np.ndarray], threshold: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Greedy predictions [B, 10], skip scores [B, 10] (skip task) and the mean reward per step."""
        table, n = self.table, len(data["length"])
        context, history = session_context(data), initial_history(data, self.task)
        preds = np.zeros((n, HALF_LENGTH), dtype=np.int64)
        scores = np.zeros((n, HALF_LENGTH), dtype=np.float32)
        sampler = self._eval_sampler()
        reward_sum, steps = 0.0, 0
        for t in range(HALF_LENGTH):
            active = data["out_mask"][:, t]
            if not active.any():
                break
            obs = build_observation(context, np.full(n, t), history, table)
            action = self.actions(obs)  # (B, D)
            positive = data["out_tracks"][:, t]
            if self.task == "skip":
                scores[:, t] = (action * table[positive]).sum(axis=1)
                listened = scores[:, t] > threshold
                preds[:, t] = (~listened).astype(np.int64)  # skip_2 = 1 means skipped
                history = push_history(history, positive, listened & active)
            else:
                chosen = FIRST_TRACK_ID + np.argmax(action @ table[FIRST_TRACK_ID:].T, axis=1)  # (B,)
                preds[:, t] = chosen
                history = push_history(history, chosen, active)
            reward_sum += float(self._step_rewards(action, positive, data["out_skip_2"][:, t], sampler)[active].sum())
            steps += int(active.sum())
        return preds, scores, reward_sum / max(steps, 1)

    def rollout_in_chunks(self, data: dict[str, np.ndarray], threshold: float) -> tuple[np.ndarray, np.ndarray, float]:
        """`rollout` over EVAL_CHUNK sessions at a time (seq scores a [chunk, vocab] matrix per step)."""
        n = len(data["length"])
        if n == 0:
            return np.zeros((0, HALF_LENGTH), np.int64), np.zeros((0, HALF_LENGTH), np.float32), 0.0
        preds, scores, reward, weight = [], [], 0.0, 0
        for start in range(0, n, EVAL_CHUNK):
            chunk = {k: v[start : start + EVAL_CHUNK] for k, v in data.items()}
            p, s, r = self.rollout(chunk, threshold)
            steps = int(chunk["out_mask"].sum())
            preds.append(p), scores.append(s)
            reward, weight = reward + r * steps, weight + steps
        return np.concatenate(preds), np.concatenate(scores), reward / max(weight, 1)

    def _eval_sampler(self) -> NegativeSampler:
        counts = np.zeros(self.dataset.vocab_size)
        vocab = self.dataset.vocab
        counts[vocab.column("index").to_numpy()] = vocab.column("count").to_numpy()
        return NegativeSampler(counts, self.config.negative_ratio, self.config.negative_sampling, EVAL_NEGATIVES_SEED)

    def _step_rewards(self, action, positive, skipped, sampler: NegativeSampler) -> np.ndarray:
        """The environment's reward for each row's greedy choice among positive + negatives, [B]."""
        negatives = sampler.sample(positive)  # (B, R)
        candidates = np.concatenate([positive[:, None], negatives], axis=1)  # positive first: ties go to it
        best = np.einsum("bd,bkd->bk", action, self.table[candidates]).argmax(axis=1)
        hit = best == 0
        if self.task == "skip":
            return np.where(hit, np.where(skipped == 0, 1.0, -1.0), 0.0)
        return hit.astype(np.float64)

    def fit_skip_threshold(self) -> float:
        """The score threshold with the best per-position skip accuracy on training sessions."""
        data = self.split("train")
        data = {k: v[:THRESHOLD_SESSIONS] for k, v in data.items()}
        _, scores, _ = self.rollout_in_chunks(data, threshold=0.0)
        mask = data["out_mask"]
        values, listened = scores[mask], data["out_skip_2"][mask] == 0
        if len(values) == 0:
            return 0.0
        quantiles = np.quantile(values, np.linspace(0.0, 1.0, 101))
        candidates = np.unique(np.concatenate([[values.min() - 1.0], quantiles]))  # the first: "all listened"
        accuracy = [((values > c) == listened).mean() for c in candidates]
        return float(candidates[int(np.argmax(accuracy))])

    def evaluate(self, split: str = "val", beam_size: int | None = None) -> dict:
        """maa, first_accuracy, accuracy_at, correct_histogram, loss, sessions on `split` (no noise)."""
        if beam_size not in (None, 1):
            raise ValueError("DDPG decodes greedily; beam_size must be 1")
        data = self.split(split)
        if self.config.eval_sessions:
            data = {k: v[: self.config.eval_sessions] for k, v in data.items()}
        if self.task == "skip":
            self.skip_threshold = self.fit_skip_threshold()
        run = self.predict_batches([data])
        return evaluate_predictions(run["pred"], run["truth"], run["mask"], loss=run["loss"])

    def predict_batches(self, batches, beam_size: int | None = None) -> dict:
        """Greedy predictions over numpy task batches with the fitted skip threshold (no refit):
        pred, truth, mask ([N, 10] each) and loss (minus the mean reward), as `Trainer.predict_batches`."""
        if beam_size not in (None, 1):
            raise ValueError("DDPG decodes greedily; beam_size must be 1")
        preds, truths, masks, reward, weight = [], [], [], 0.0, 0
        for batch in batches:
            pred, _, mean_reward = self.rollout_in_chunks(batch, self.skip_threshold)
            steps = int(batch["out_mask"].sum())
            preds.append(pred)
            truths.append(batch[label_key(self.task)])
            masks.append(batch["out_mask"])
            reward, weight = reward + mean_reward * steps, weight + steps
        if not preds:
            empty = np.zeros((0, HALF_LENGTH), np.int64)
            return {"pred": empty, "truth": empty, "mask": empty.astype(bool), "loss": float("nan")}
        return {"pred": np.concatenate(preds), "truth": np.concatenate(truths), "mask": np.concatenate(masks),
                "loss": -reward / max(weight, 1)}

    # -- checkpoints ------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write the RLlib algorithm state, the embedding table and the trial's settings."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.algo.save_to_path(str((directory / ALGORITHM_DIR).resolve()))
        if Path(self.table_path).resolve() != (directory / TABLE_FILE).resolve():
            shutil.copyfile(self.table_path, directory / TABLE_FILE)
        for name in DATA_FILES:  # the vocabulary and categories tuning.predict encodes new sessions with
            if (self.data_dir / name).resolve() != (directory / name).resolve():
                shutil.copyfile(self.data_dir / name, directory / name)
        state = {
            "task": self.task,
            "model": NAME,
            "config": self.config_dict(),
            "protocol": self.protocol,
            "seed": self.seed,
            "input_path": self.input_path,
            "epoch": self.epoch,
            "skip_threshold": self.skip_threshold,
            "data_dir": str(self.data_dir.resolve()),
            "data_fingerprint": self.dataset.fingerprint,
            "num_parameters": self.num_parameters,
        }
        write_state(directory, state)
        return directory

    @classmethod
    def restore(cls, directory: str | Path, data_dir: str | Path | None = "saved", device: str = "auto") -> "RLTrainer":
        """Rebuild a trainer from `save`'s directory; `data_dir` defaults to the one it was trained on."""
        directory = Path(directory)
        state = read_state(directory)
        if not (directory / ALGORITHM_DIR).is_dir():
            raise CheckpointError(f"{directory}: not a DDPG checkpoint directory (no {ALGORITHM_DIR}/, written by RLTrainer.save)")
        if data_dir in ("saved", None):  # DDPG replays sessions through its environment, even to predict
            data_dir = state.get("data_dir")
        if data_dir is None or not Path(data_dir, "manifest.json").exists():
            raise CheckpointError(
                f"{directory}: DDPG needs its prepared dataset to run the environment; {data_dir} is not one. "
                "Pass data_dir=<prepared directory>."
            )
        return cls(
            state["task"],
            NAME,
            state["config"],
            data_dir,
            protocol=state["protocol"],
            device=device,
            seed=state["seed"],
            input_path=state["input_path"],
            _restore_from=directory,
        )


def _keep_copy(table: Path, cache: Path) -> Path:
    """A copy of a checkpoint's table in `cache`, named by its content (written once, atomically)."""
    digest = hashlib.sha256(table.read_bytes()).hexdigest()[:16]
    path = cache / f"ddpg_tracks_restored_{digest}.npy"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        shutil.copyfile(table, tmp)
        os.replace(tmp, path)
    return path
