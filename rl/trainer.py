"""Train and evaluate one DDPG configuration behind the trainer contract (`tuning.trainer.TrainerProtocol`).

    trainer = RLTrainer(task="skip", config={"hidden_size": 32}, data_dir="data/prepared")
    trainer.train_epoch()       # one pass over the train split's sessions, through RLlib
    trainer.evaluate("val")     # maa, first_accuracy, accuracy_at, correct_histogram, loss, sessions
    trainer.save("ckpt/"); trainer = RLTrainer.restore("ckpt/", data_dir=None)   # predicts alone

Training runs RLlib's DDPG (rl/ddpg) on the vectorised session-replay
environment (rl/env.py): one local EnvRunner replaying ``num_envs`` sessions at
once and a local Learner (CUDA when present).

Evaluation and prediction are batched and outside RLlib: the actor alone, as a
plain torch module (``rl.ddpg.torch.ddpg_networks.Actor``), no noise, over the
same ``rl.env.Replay`` state the environment uses, advanced with the agent's
own predictions, never with second-half labels:

- ``skip``: each output track gets a listen score: the action itself under the
  ``dense`` formulation, the dot product of the action with the track's
  embedding under ``paper``; the track is predicted listened when the score
  exceeds a threshold fitted on training sessions (the one that maximises
  per-position accuracy there);
- ``seq``: the greedy 10-track sequence, each the best score over the whole
  vocabulary; ``top`` holds the ten best tracks per position with the state
  advanced along the true tracks (the ranking metrics' convention).

``loss`` is minus the mean reward per step the greedy policy earns on that
split (under ``paper`` with fixed negatives), so lower is better as for the
supervised losses.

A checkpoint holds tensors and plain data only (``models.checkpoint``): the
actor, the fixed track table and the skip threshold for prediction, and the
Learner's state (every network and both optimizers) to continue training, so
restoring never unpickles anything and needs neither RLlib nor the prepared
dataset to predict.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from data_pipeline.dataset import HALF_LENGTH, PROTOCOLS, open_prepared
from data_pipeline.tasks import check_task, label_key
from models.checkpoint import (
    WEIGHTS_FILE,
    CheckpointError,
    load_weights,
    rebuild_trainer,
    resolve_device,
    save_trainer_state,
    save_weights,
)
from models.metrics import RANK_CUTOFF, evaluate_predictions, gather_predictions
from rl.ddpg.torch.ddpg_networks import Actor, CrossCritic
from rl.env import (
    ENV_NAME,
    Replay,
    TrackTable,
    action_size,
    check_formulation,
    dense_reward,
    load_table,
    observation_size,
    paper_reward,
    register,
    track_embedding_table,
)
from rl.negatives import NegativeSampler, play_counts
from rl.spec import NAME, DDPGModelConfig

THRESHOLD_SESSIONS = 2000  # training sessions used to fit the skip threshold
EVAL_NEGATIVES_SEED = 12345  # fixed negatives for the paper formulation's evaluation loss
EVAL_CHUNK = 1024  # sessions per evaluation batch
ITERATION_STEPS_PER_ENV = 40  # one RLlib iteration samples this many vector steps (4 sessions per env row)


class RLTrainer:
    """One DDPG trial: the methods and result keys of `tuning.trainer.TrainerProtocol`."""

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
        # input_path is part of the trainer contract; DDPG always reads its split into memory.
        self.task, self.model_name, self.protocol, self.seed, self.input_path = task, NAME, protocol, int(seed), input_path
        self.config = DDPGModelConfig.from_dict(dict(config or {}))
        check_formulation(self.config.formulation)
        self.device = resolve_device(device)
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.dataset = open_prepared(self.data_dir) if self.data_dir is not None else None
        self.checkpoint_dir = _restore_from  # where it was restored from: the data files to save again
        self.epoch = 0
        self.skip_threshold = 0.0
        self._splits: dict[str, dict[str, np.ndarray]] = {}
        saved = load_weights(Path(_restore_from) / WEIGHTS_FILE) if _restore_from is not None else {}
        if saved:
            rows = saved["table"].numpy()
            self.fingerprint = str(json.loads((Path(_restore_from) / "manifest.json").read_text()).get("fingerprint"))
        elif self.dataset is None:
            raise ValueError("DDPG replays sessions: give the prepared data directory (data_dir=...) to train")
        else:
            cache = Path(cache_dir) if cache_dir is not None else self.dataset.cache_dir
            table_path = track_embedding_table(self.dataset, self.config.embedding_size, self.seed, cache)
            rows = load_table(table_path, self.dataset.vocab_size)
            self.fingerprint = self.dataset.fingerprint
        self.table = TrackTable(rows, self.config.formulation)
        self.observation_size = observation_size(task, self.config.formulation, self.table.dim)
        self.action_size = action_size(task, self.config.formulation, self.table.dim)
        self.actor = Actor(self.observation_size, self.action_size, self.config.hidden_size).to(self.device).eval()
        self._learner_state = saved.get("learner")  # kept by a prediction-only trainer, to save it again
        self.algo = None
        if self.dataset is not None:
            if saved:
                table_path = _table_file(rows, self.dataset.cache_dir if cache_dir is None else Path(cache_dir))
            self.algo = self._build_algorithm(table_path)
        if saved:
            self._load(saved, Path(_restore_from) / WEIGHTS_FILE)

    def _load(self, saved: dict, path: Path) -> None:
        try:
            self.actor.load_state_dict(saved["actor"])
            self.epoch = int(saved["epoch"])
            self.skip_threshold = float(saved["skip_threshold"])
            if self.algo is not None:
                from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

                self.algo.learner_group.set_state(self._learner_state)
                self.algo.env_runner.set_state({NUM_ENV_STEPS_SAMPLED_LIFETIME: int(saved["env_steps"])})
                self.algo.env_runner_group.sync_weights(from_worker_or_learner_group=self.algo.learner_group)
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"{path}: does not fit the DDPG {self.task} model its trainer.json describes ({first})") from None

    # -- RLlib ------------------------------------------------------------------

    def env_config(self, table_path: Path, split: str = "train") -> dict:
        c = self.config
        return {
            "data_dir": str(self.data_dir.resolve()),
            "embeddings_path": str(Path(table_path).resolve()),
            "task": self.task,
            "formulation": c.formulation,
            "split": split,
            "protocol": self.protocol,
            "negative_ratio": c.negative_ratio,
            "negative_sampling": c.negative_sampling,
            "seed": self.seed,
        }

    def rllib_config(self, table_path: Path):
        """The RLlib `DDPGConfig` of this trial."""
        from rl.ddpg import DDPGConfig

        c = self.config
        return (
            DDPGConfig()
            .environment(ENV_NAME, env_config=self.env_config(table_path))
            .framework("torch")
            .env_runners(
                num_env_runners=0,
                num_envs_per_env_runner=c.num_envs,
                gym_env_vectorize_mode="vector_entry_point",  # the registered creator returns the vector env
                # One sample call replays HALF_LENGTH vector steps: RLlib's per-call cost (cutting every
                # ongoing episode) is paid once per session, and training_intensity sets the updates.
                rollout_fragment_length=HALF_LENGTH,
            )
            # Actions are already in the action space's [-1, 1]: skip the per-row unsquash and clip.
            .environment(normalize_actions=False, clip_actions=False)
            .learners(num_learners=0, num_gpus_per_learner=1 if self.device.type == "cuda" else 0)
            .training(
                hidden_size=c.hidden_size,
                tau=c.tau,
                actor_lr=c.actor_lr,
                critic_lr=c.critic_lr,
                gamma=c.gamma,
                train_batch_size_per_learner=c.batch_size,
                replay_buffer_config={"capacity": c.buffer_size},
                num_steps_sampled_before_learning_starts=c.learning_starts,
                training_intensity=c.training_intensity,
                noise_type=c.noise_type,
                noise_mask_initial=c.noise_mask_initial,
                noise_mask_decay=c.noise_mask_decay,
                gaussian_sigma=c.gaussian_sigma,
            )
            .reporting(min_sample_timesteps_per_iteration=ITERATION_STEPS_PER_ENV * c.num_envs, min_time_s_per_iteration=0)
            .debugging(seed=self.seed, log_level="ERROR")
        )

    def _build_algorithm(self, table_path: Path):
        register()
        return self.rllib_config(table_path).build_algo()

    @property
    def num_parameters(self) -> int:
        """Trainable parameters of the actor, the critic and the shared state encoder (targets excluded)."""
        critic = CrossCritic(self.config.hidden_size, self.action_size)
        return sum(p.numel() for net in (self.actor, critic) for p in net.parameters())

    def config_dict(self) -> dict:
        return self.config.to_dict()

    # -- training ---------------------------------------------------------------

    def train_epoch(self) -> dict:
        """RLlib iterations until `sessions_per_epoch` sessions (default: the train split's count) were replayed."""
        if self.algo is None:
            raise ValueError("this trainer has no data directory; restore it with data_dir=... to train")
        with _torch_threads(1 if self.device.type == "cpu" else None):
            return self._train_epoch()

    def _train_epoch(self) -> dict:
        target = self.config.sessions_per_epoch or len(self.split("train")["length"])
        start = time.perf_counter()
        steps0, episodes0, updates0 = self._counters()
        result: dict = {}
        iteration = 0
        while self._counters()[1] - episodes0 < target:
            result = self.algo.train()
            iteration += 1
            if self.config.show_progress:
                learner = result.get("learners", {}).get("default_policy", {})
                print(
                    f"ddpg {self.task} epoch {self.epoch + 1} iteration {iteration}: "
                    f"{self._counters()[1] - episodes0}/{target} sessions, "
                    f"return {result.get('env_runners', {}).get('episode_return_mean', float('nan')):.3f}, "
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
            "seconds": elapsed,
            "env_steps_per_s": (steps - steps0) / elapsed,
            "updates_per_s": (updates - updates0) / elapsed,
            "episode_return_mean": float(result.get("env_runners", {}).get("episode_return_mean", float("nan"))),
            "noise_mask_fraction": float(result.get("noise_mask_fraction", 0.0)),
        }

    def _counters(self) -> tuple[int, int, int]:
        """Lifetime (env steps, episodes, learner updates) so far."""
        from ray.rllib.core import ALL_MODULES
        from ray.rllib.utils.metrics import (
            ENV_RUNNER_RESULTS,
            LEARNER_RESULTS,
            NUM_ENV_STEPS_SAMPLED_LIFETIME,
            NUM_MODULE_STEPS_TRAINED_LIFETIME,
            NUM_EPISODES_LIFETIME,
        )

        peek = self.algo.metrics.peek
        trained = int(peek((LEARNER_RESULTS, ALL_MODULES, NUM_MODULE_STEPS_TRAINED_LIFETIME), default=0))
        return (
            int(peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)),
            int(peek((ENV_RUNNER_RESULTS, NUM_EPISODES_LIFETIME), default=0)),
            trained // self.config.batch_size,  # gradient steps: one per minibatch
        )

    def _sync_actor(self) -> None:
        """Copy the trained actor from RLlib (the EnvRunner's module, synced after every update)."""
        if self.algo is not None:
            self.actor.load_state_dict(self.algo.get_module().state_dict())

    # -- evaluation -------------------------------------------------------------

    def split(self, name: str) -> dict[str, np.ndarray]:
        if self.dataset is None:
            raise ValueError("this trainer has no data directory; restore it with data_dir=... to evaluate")
        if name not in self._splits:
            self._splits[name] = self.dataset.numpy_split(name, self.protocol)
        return self._splits[name]

    @torch.no_grad()
    def actions(self, obs: np.ndarray) -> np.ndarray:
        """The actor's noiseless actions for observations [B, obs] -> [B, A]."""
        return self.actor(torch.from_numpy(obs).to(self.device)).float().cpu().numpy()

    def rollout(self, data: dict[str, np.ndarray], threshold: float, teacher_forced: bool = False) -> dict:
        """One greedy pass over a task batch: pred [B, 10], skip scores [B, 10] (skip), the ten best
        tracks per position ``top`` [B, 10, 10] (seq), and the summed reward over the real positions.

        The state advances with the agent's own predictions, or with the true tracks when
        `teacher_forced` (for ``top``: the ranking metrics rank each position given the true past).
        """
        n = len(data["length"])
        replay = Replay(data, self.task, self.config.formulation, self.table)
        replay.start(np.arange(n))
        sampler = self._eval_sampler() if self.config.formulation == "paper" else None
        pred = np.zeros((n, HALF_LENGTH), dtype=np.int64)
        scores = np.zeros((n, HALF_LENGTH), dtype=np.float32)
        top = np.zeros((n, HALF_LENGTH, RANK_CUTOFF), dtype=np.int64)
        reward_sum = 0.0
        for t in range(HALF_LENGTH):
            active = data["out_mask"][:, t]
            if not active.any():
                break
            action = self.actions(replay.observation())
            positives, listened = replay.positives(), replay.listened()
            if self.task == "skip":
                scores[:, t] = action[:, 0] if self.action_size == 1 else self.table.scores(action, positives)
                predicted = scores[:, t] > threshold
                pred[:, t] = (~predicted).astype(np.int64)  # skip_2 = 1 means skipped
                replay.advance(positives, (listened if teacher_forced else predicted) & active, ~predicted)
            else:
                top[:, t] = self.table.top(action, RANK_CUTOFF)
                pred[:, t] = top[:, t, 0]
                replay.advance(positives if teacher_forced else pred[:, t], active, np.zeros(n, bool))
            if sampler is None:
                reward = dense_reward(self.task, action, positives, listened, self.table)
            else:
                reward = paper_reward(self.task, action, positives, listened, self.table, sampler)
            reward_sum += float(reward[active].sum())
        return {"pred": pred, "scores": scores, "top": top, "reward_sum": reward_sum}

    def _eval_sampler(self) -> NegativeSampler:
        vocab = self.dataset.vocab if self.dataset is not None else pq.read_table(Path(self.checkpoint_dir) / "vocab.parquet")
        counts = play_counts(vocab, self.table.vocab_size)
        return NegativeSampler(counts, self.config.negative_ratio, self.config.negative_sampling, EVAL_NEGATIVES_SEED)

    def fit_skip_threshold(self) -> float:
        """The score threshold with the best per-position skip accuracy on training sessions."""
        data = {k: v[:THRESHOLD_SESSIONS] for k, v in self.split("train").items()}
        scores = np.concatenate([self.rollout(chunk, threshold=0.0)["scores"] for chunk in _chunks(data)])
        mask = data["out_mask"]
        values, listened = scores[mask], data["out_skip_2"][mask] == 0
        if len(values) == 0:
            return 0.0
        quantiles = np.quantile(values, np.linspace(0.0, 1.0, 101))
        candidates = np.unique(np.concatenate([[values.min() - 1.0], quantiles]))  # the first: "all listened"
        accuracy = [((values > c) == listened).mean() for c in candidates]
        return float(candidates[int(np.argmax(accuracy))])

    def evaluate(self, split: str = "val", beam_size: int | None = None) -> dict:
        """maa, first_accuracy, accuracy_at, correct_histogram, loss, sessions on `split` (no noise);
        for seq also Recall@10, NDCG@10 and MRR@10."""
        data = self.split(split)
        if self.config.eval_sessions:
            data = {k: v[: self.config.eval_sessions] for k, v in data.items()}
        self._sync_actor()
        if self.task == "skip":
            self.skip_threshold = self.fit_skip_threshold()
        run = self.predict_batches([data], beam_size)
        return evaluate_predictions(run["pred"], run["truth"], run["mask"], loss=run["loss"], top=run.get("top"))

    def predict_batches(self, batches, beam_size: int | None = None) -> dict:
        """Greedy predictions over numpy task batches with the fitted skip threshold (no refit): pred, truth,
        mask ([N, 10] each), loss (minus the mean reward) and, for seq, top ([N, 10, 10])."""
        if beam_size not in (None, 1):
            raise ValueError("DDPG decodes greedily; beam_size must be 1")
        parts = []
        for batch in batches:
            for chunk in _chunks(batch):
                run = self.rollout(chunk, self.skip_threshold)
                part = {"pred": run["pred"], "truth": chunk[label_key(self.task)], "mask": chunk["out_mask"],
                        "loss_sum": -run["reward_sum"], "weight": int(chunk["out_mask"].sum())}
                if self.task == "seq":
                    part["top"] = self.rollout(chunk, self.skip_threshold, teacher_forced=True)["top"]
                parts.append(part)
        return gather_predictions(parts)

    # -- checkpoints ------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write the actor, the table, the threshold and the Learner's state (tensors and plain data only)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._sync_actor()
        weights = {
            "actor": self.actor.state_dict(),
            "table": self.table.rows,
            "skip_threshold": self.skip_threshold,
            "epoch": self.epoch,
            "learner": self._learner_state,
            "env_steps": 0,
        }
        if self.algo is not None:
            from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_OPTIMIZER, COMPONENT_RL_MODULE

            parts = [f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}", f"{COMPONENT_LEARNER}/{COMPONENT_OPTIMIZER}"]
            weights["learner"] = self.algo.learner_group.get_state(components=parts)
            weights["env_steps"] = self._counters()[0]
        save_weights(weights, directory / WEIGHTS_FILE)
        data_source = self.dataset if self.dataset is not None else Path(self.checkpoint_dir)
        save_trainer_state(directory, self, data_source, self.data_dir, self.fingerprint,
                           skip_threshold=self.skip_threshold)
        return directory

    @classmethod
    def restore(cls, directory: str | Path, data_dir: str | Path | None = "saved", device: str = "auto") -> "RLTrainer":
        """Rebuild a trainer from `save`'s directory.

        With ``data_dir=None`` it predicts only: the actor as a plain torch module
        and the checkpoint's table, no RLlib, no prepared dataset. With a prepared
        directory (``"saved"``: the one it was trained on, when it still exists)
        it also continues training: the Learner gets its networks and optimizers back.
        """
        return rebuild_trainer(cls, directory, data_dir, device, files=(WEIGHTS_FILE,))


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """Run the block with `threads` intra-op torch threads (None: leave as is), then restore the count.

    DDPG's networks are small (hidden <= 128, batch 512): a second thread gains nothing, and on a
    machine whose cores are busy with other work the threads wait on each other. Measured on the
    2-core machine under load 4: 20 updates of batch 512 took 2.6 s with 2 threads, 0.085 s with 1.
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _chunks(data: dict[str, np.ndarray]):
    """EVAL_CHUNK sessions at a time (seq scores a [chunk, vocabulary] matrix per step)."""
    for start in range(0, len(data["length"]), EVAL_CHUNK):
        yield {k: v[start : start + EVAL_CHUNK] for k, v in data.items()}


def _table_file(rows: np.ndarray, cache: Path) -> Path:
    """A checkpoint's table as an `.npy` file in `cache` for the environment, named by its content."""
    digest = hashlib.sha256(np.ascontiguousarray(rows).tobytes()).hexdigest()[:16]
    path = Path(cache) / f"ddpg_tracks_restored_{digest}.npy"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, rows)
        os.replace(tmp, path)  # atomic: concurrent trials never read half a file
    return path
