"""The session-replay environment of the paper's DDPG recommender (section 2.3).

One episode replays one logged session. The agent sees the session's first half
(the protocol's input half) and then acts once per position of the second half:

- state ("wide & deep", paper 2.3 point 1): the session context, the embeddings
  of the last ``HISTORY_LENGTH`` positively rewarded tracks, and the element-wise
  product of each with the session embedding (their mean). Positive tracks are
  listened (not skipped) tracks for ``skip`` and every logged track for ``seq``
  (a logged next track is exactly what earns +1 there).
- action: a vector in the track-embedding space (the actor's "ideal track").
  The environment scores the candidates, the logged track plus
  ``negative_ratio`` sampled negatives (paper point 2), by dot product with the
  fixed track embedding table and takes the best one.
- reward: ``skip``: +1 if the chosen track is the logged one and was listened,
  -1 if it is the logged one and was skipped, 0 for a track not in the session;
  ``seq``: +1 if the chosen track is the logged next track, else 0.

During training the history advances along the log (the logged track joins it
when it was positive), like teacher forcing in the supervised decoders. The
batched evaluation in ``rl.trainer`` advances it with the agent's own
predictions instead, so no label of the second half leaks into a prediction.

The track embedding table (word2vec on training sessions concatenated with the
prepared track features) is built once by ``track_embedding_table`` and stays
fixed; the environment reads it from an ``.npy`` file.
"""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym
import numpy as np

from data_pipeline.dataset import HALF_LENGTH, open_prepared
from data_pipeline.schema import CATEGORICAL_VALUES, FIRST_TRACK_ID
from data_pipeline.tasks import TASKS
from rl.negatives import NegativeSampler

ENV_NAME = "mssd_session_replay"
HISTORY_LENGTH = 5  # the paper keeps the last 5 positively rewarded tracks
CONTEXT_TYPE_SLOTS = 1 + len(CATEGORICAL_VALUES["context_type"]) + 1  # pad/unknown, known values, any other
CONTEXT_SIZE = 6 + CONTEXT_TYPE_SLOTS


def observation_size(embedding_dim: int) -> int:
    """Length of the flat observation for a table of `embedding_dim` columns."""
    return CONTEXT_SIZE + 2 * HISTORY_LENGTH * embedding_dim


def session_context(data: dict[str, np.ndarray]) -> np.ndarray:
    """Per-session context from the input half only, float32 [B, CONTEXT_SIZE - 1] (the step is added later).

    Columns: listen rate of the input half, last input skip_2, is_shuffle,
    premium, hour_of_day / 23, then a one-hot of context_type.
    """
    n_in = np.maximum(data["n_in"], 1)
    rows = np.arange(len(n_in))
    last = n_in - 1
    skipped = (data["in_skip_2"] * data["in_mask"]).sum(axis=1)
    context_type = np.minimum(data["in_context_type"][rows, last], CONTEXT_TYPE_SLOTS - 1)
    columns = [
        1.0 - skipped / n_in,
        data["in_skip_2"][rows, last],
        data["in_is_shuffle"][rows, last],
        data["in_premium"][rows, last],
        data["in_hour_of_day"][rows, last] / 23.0,
    ]
    one_hot = np.eye(CONTEXT_TYPE_SLOTS)[context_type]
    return np.concatenate([np.stack(columns, axis=1), one_hot], axis=1).astype(np.float32)


def initial_history(data: dict[str, np.ndarray], task: str) -> np.ndarray:
    """The last HISTORY_LENGTH positive input tracks per session, int64 [B, H], oldest first, 0-padded on the left."""
    positive = data["in_mask"] & ((data["in_skip_2"] == 0) if task == "skip" else True)
    history = np.zeros((len(positive), HISTORY_LENGTH), dtype=np.int64)
    for row in range(len(positive)):
        tracks = data["in_tracks"][row][positive[row]][-HISTORY_LENGTH:]
        if len(tracks):
            history[row, -len(tracks) :] = tracks
    return history


def push_history(history: np.ndarray, tracks: np.ndarray, push: np.ndarray) -> np.ndarray:
    """`history` with `tracks` appended (oldest dropped) in the rows where `push` is True."""
    shifted = np.concatenate([history[:, 1:], tracks[:, None]], axis=1)
    return np.where(push[:, None], shifted, history)


def build_observation(context: np.ndarray, step: np.ndarray, history: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The wide & deep state, float32 [B, observation_size(D)].

    context [B, CONTEXT_SIZE - 1], step [B] (0-based position in the output
    half), history [B, H] track ids (0 = empty slot, whose table row is zero).
    """
    tracks = table[history]  # (B, H, D)
    filled = np.maximum((history != 0).sum(axis=1, keepdims=True), 1)  # (B, 1)
    session = tracks.sum(axis=1) / filled  # (B, D): the session embedding
    product = tracks * session[:, None, :]  # (B, H, D): wide & deep cross term
    flat = [context, (step / HALF_LENGTH)[:, None], tracks.reshape(len(tracks), -1), product.reshape(len(tracks), -1)]
    return np.concatenate(flat, axis=1).astype(np.float32)


class SessionReplayEnv(gym.Env):
    """Replays logged sessions of one split; see the module docstring.

    ``config`` keys: ``data_dir`` (prepared dataset), ``embeddings_path``
    (``.npy`` table [vocab_size, D]), ``task`` ("skip" | "seq"), ``split``
    (default "train"), ``protocol`` (default "paper"), ``negative_ratio``
    (default 99), ``negative_sampling`` ("popularity" | "uniform"), ``seed``.
    ``reset(options={"session": i})`` replays session i instead of a random one.
    """

    metadata = {"render_modes": []}

    def __init__(self, config: dict | None = None):
        config = dict(config or {})
        missing = [key for key in ("data_dir", "embeddings_path", "task") if key not in config]
        if missing:
            raise ValueError(f"SessionReplayEnv needs env_config keys {', '.join(missing)}")
        self.task = config["task"]
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}: choose one of {', '.join(TASKS)}")
        dataset = open_prepared(config["data_dir"])
        split = config.get("split", "train")
        self.data = dataset.numpy_split(split, config.get("protocol", "paper"))
        if len(self.data["length"]) == 0:
            raise ValueError(
                f"{config['data_dir']}: split {split!r} has no session under protocol "
                f"{config.get('protocol', 'paper')!r}; use another protocol or more data"
            )
        self.table = load_table(config["embeddings_path"], dataset.vocab_size)
        counts = np.zeros(dataset.vocab_size)
        counts[dataset.vocab.column("index").to_numpy()] = dataset.vocab.column("count").to_numpy()
        self.sampler = NegativeSampler(
            counts,
            ratio=int(config.get("negative_ratio", 99)),
            mode=config.get("negative_sampling", "popularity"),
            seed=int(config.get("seed", 0)),
        )
        self.context = session_context(self.data)
        self.history0 = initial_history(self.data, self.task)
        dim = self.table.shape[1]
        magnitude = float(max(1.0, np.abs(self.table).max()))
        bound = magnitude**2  # context <= 1, embeddings <= magnitude, products <= magnitude^2
        self.observation_space = gym.spaces.Box(-bound, bound, (observation_size(dim),), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)
        self.session = 0
        self.step_index = 0
        self.history = self.history0[:1].copy()

    def _observation(self) -> np.ndarray:
        row = slice(self.session, self.session + 1)
        return build_observation(self.context[row], np.array([self.step_index]), self.history, self.table)[0]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.sampler.rng = np.random.default_rng(seed)
        if options and "session" in options:
            self.session = int(options["session"])
        else:
            self.session = int(self.np_random.integers(len(self.context)))
        self.step_index = 0
        self.history = self.history0[self.session : self.session + 1].copy()
        return self._observation(), {"session": self.session}

    def step(self, action):
        row, t = self.session, self.step_index
        positive = int(self.data["out_tracks"][row, t])
        candidates = np.concatenate([[positive], self.sampler.sample(np.array([positive]))[0]])
        self.sampler.rng.shuffle(candidates)  # the positive's place is random, so score ties are no hint
        scores = self.table[candidates] @ np.asarray(action, dtype=np.float32)
        chosen = int(candidates[int(np.argmax(scores))])
        if self.task == "skip":
            listened = self.data["out_skip_2"][row, t] == 0
            reward = (1.0 if listened else -1.0) if chosen == positive else 0.0
            push = bool(listened)
        else:
            reward = 1.0 if chosen == positive else 0.0
            push = True
        self.history = push_history(self.history, np.array([positive]), np.array([push]))
        self.step_index += 1
        terminated = self.step_index >= int(self.data["n_out"][row])
        info = {"chosen": chosen, "positive": positive}
        return self._observation(), reward, terminated, False, info


def load_table(path: str | Path, vocab_size: int) -> np.ndarray:
    """The fixed track embedding table, float32 [vocab_size, D], reserved rows zeroed."""
    table = np.load(path).astype(np.float32)
    if table.ndim != 2 or table.shape[0] != vocab_size:
        raise ValueError(
            f"{path}: track embedding table of shape {table.shape} does not match the dataset's "
            f"vocabulary of {vocab_size} ids; rebuild it with rl.env.track_embedding_table"
        )
    table[:FIRST_TRACK_ID] = 0.0  # padding / reserved ids are "no track"
    return table


def track_embedding_table(dataset, dim: int, seed: int, cache_dir: str | Path) -> Path:
    """Build (once, cached) the fixed table: word2vec [V, dim] ++ track_features [V, F], as `.npy`.

    The word2vec part is scaled to unit RMS per column like the standardised
    features, so neither half dominates the dot product.
    """
    from models.word2vec import train_word2vec

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"ddpg_tracks_{dataset.fingerprint}_w2v{dim}_seed{seed}.npy"
    if not path.exists():
        vectors = np.asarray(train_word2vec(dataset, dim=dim, seed=seed, cache_dir=cache_dir), dtype=np.float32)
        vectors = vectors / np.maximum(np.sqrt((vectors[FIRST_TRACK_ID:] ** 2).mean(axis=0)), 1e-6)
        table = np.concatenate([vectors, dataset.track_features.astype(np.float32)], axis=1)
        table[:FIRST_TRACK_ID] = 0.0
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, table)
        os.replace(tmp, path)  # atomic: concurrent trials never read half a file
    return path


def register() -> None:
    """Register the environment with Ray Tune's registry under ENV_NAME (idempotent)."""
    from ray.tune.registry import register_env

    register_env(ENV_NAME, lambda env_config: SessionReplayEnv(dict(env_config)))
