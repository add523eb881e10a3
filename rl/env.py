"""The session-replay environment of the paper's DDPG recommender (section 2.3), vectorised.

One episode replays one logged session: the agent sees the session's first
half (the protocol's input half) and then acts once per position of the second
half. ``SessionReplayEnv`` is a ``gymnasium.vector.VectorEnv`` of ``num_envs``
rows replayed at once with numpy (RLlib's env runners take it as it is, see
``register``); ``Replay`` is the state of a batch of rows, shared with the
batched evaluation in ``rl.trainer``, so training and prediction build the
agent's state with the same code.

State ("wide & deep", paper 2.3 point 1): the session context (input-half
statistics and the step), the embeddings of the last ``HISTORY_LENGTH``
positively rewarded tracks, and the element-wise product of each with the
session embedding (their mean). Positive tracks are listened (not skipped)
tracks for ``skip`` and every logged track for ``seq``. During training the
history advances along the log, like teacher forcing in the supervised
decoders; the evaluation advances it with the agent's own predictions, so no
label of the second half leaks into a prediction.

Two formulations (``FORMULATIONS``) of action and reward:

- ``paper``, the paper's: the action is a vector in the track-embedding space
  (the actor's "ideal track"). The environment scores the candidates, the
  logged track plus ``negative_ratio`` sampled negatives (paper point 2), by
  dot product with the fixed table and takes the best one (a tie is a miss).
  Reward: ``skip`` +1 if the chosen track is the logged one and was listened,
  -1 if it is the logged one and was skipped, 0 otherwise; ``seq`` +1 if the
  chosen track is the logged next track, else 0. A skip is predicted by a
  threshold on the dot product of the action with the played track.
- ``dense``: the reward is a proper scoring rule of how close the action is to
  the logged outcome ``y`` expressed in action space,
  ``r = 1 - |a / sqrt(A) - y|^2 / 2`` (A the action size), +1 for the exact
  answer. ``skip``: the state also holds the embedding of the track about to
  be played (the task gives its id), its product with the session embedding
  and the previous position's skip; the action is one listen score in
  [-1, 1] and ``y`` is +1 listened / -1 skipped, so the best action is the
  expected outcome and a skip is predicted when the score is low. ``seq``: the
  action is the ideal track and ``y`` the logged next track's row of the
  *choice table* (the embedding table centred on the mean track and scaled to
  unit rows), so the best action points at the expected next track, and the
  prediction is the track of highest cosine with it (the dot product with the
  choice table). The reward needs no negatives.

Why ``dense`` exists: under ``paper`` a random actor almost never makes the
logged track beat 99 negatives, so nearly every reward is 0 and the critic has
nothing to learn from; for ``skip`` the action cannot depend on the track to be
scored, which is not in the state. BENCHMARKS.md has the measurements. In
session replay the next state does not depend on the action (the history
follows the log), so ``dense`` trains with gamma 0: a contextual bandit.

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
from data_pipeline.tasks import check_task
from rl.negatives import NegativeSampler, play_counts

ENV_NAME = "mssd_session_replay"
FORMULATIONS = ("dense", "paper")
HISTORY_LENGTH = 5  # the paper keeps the last 5 positively rewarded tracks
CONTEXT_TYPE_SLOTS = 1 + len(CATEGORICAL_VALUES["context_type"]) + 1  # pad/unknown, known values, any other
CONTEXT_SIZE = 6 + CONTEXT_TYPE_SLOTS


def check_formulation(formulation: str) -> str:
    if formulation not in FORMULATIONS:
        raise ValueError(f"unknown DDPG formulation {formulation!r}: choose one of {', '.join(FORMULATIONS)}")
    return formulation


def scores_played_track(task: str, formulation: str) -> bool:
    """Whether the state holds the track about to be played (``dense`` skip) and the action is one listen score."""
    return task == "skip" and formulation == "dense"


def observation_size(task: str, formulation: str, dim: int) -> int:
    """Length of the flat observation for a table of `dim` columns."""
    size = CONTEXT_SIZE + 2 * HISTORY_LENGTH * dim
    return size + 2 * dim + 1 if scores_played_track(task, formulation) else size


def action_size(task: str, formulation: str, dim: int) -> int:
    return 1 if scores_played_track(task, formulation) else dim


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
    # Stable sort by "is positive" moves each row's positive tracks to its end, in order.
    order = np.argsort(positive, axis=1, kind="stable")
    tracks = np.take_along_axis(np.where(positive, data["in_tracks"], 0), order, axis=1)
    history = tracks[:, -HISTORY_LENGTH:]
    return np.ascontiguousarray(history, dtype=np.int64)


def push_history(history: np.ndarray, tracks: np.ndarray, push: np.ndarray) -> np.ndarray:
    """`history` with `tracks` appended (oldest dropped) in the rows where `push` is True."""
    shifted = np.concatenate([history[:, 1:], tracks[:, None]], axis=1)
    return np.where(push[:, None], shifted, history)


def build_observation(context: np.ndarray, step: np.ndarray, history: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The paper's wide & deep state, float32 [B, CONTEXT_SIZE + 2 * H * D].

    context [B, CONTEXT_SIZE - 1], step [B] (0-based position in the output
    half), history [B, H] track ids (0 = empty slot, whose table row is zero).
    """
    tracks = table[history]  # (B, H, D)
    session = _session_embedding(history, tracks)
    product = tracks * session[:, None, :]  # (B, H, D): wide & deep cross term
    flat = [context, (step / HALF_LENGTH)[:, None], tracks.reshape(len(tracks), -1), product.reshape(len(tracks), -1)]
    return np.concatenate(flat, axis=1).astype(np.float32)


def _session_embedding(history: np.ndarray, tracks: np.ndarray) -> np.ndarray:
    filled = np.maximum((history != 0).sum(axis=1, keepdims=True), 1)  # (B, 1)
    return tracks.sum(axis=1) / filled  # (B, D): mean of the filled slots


class TrackTable:
    """The fixed track embedding table and how an action scores tracks with it.

    ``rows`` [V, D] build the state. ``choice`` [V, D] is what an action is
    compared with: ``rows`` under ``paper``; under ``dense`` the rows centred
    on the mean real track and scaled to unit length, so the dot product is a
    cosine and no track wins merely by lying far from the others (without the
    centring, one "hub" track near the mean direction wins for most actions).
    Reserved ids (below ``FIRST_TRACK_ID``) have zero rows in both.
    """

    def __init__(self, rows: np.ndarray, formulation: str):
        self.rows = np.asarray(rows, dtype=np.float32)
        self.formulation = check_formulation(formulation)
        if formulation == "paper":
            self.choice = self.rows
        else:
            centred = self.rows - self.rows[FIRST_TRACK_ID:].mean(axis=0)
            centred[:FIRST_TRACK_ID] = 0.0
            norms = np.linalg.norm(centred, axis=1, keepdims=True)
            self.choice = (centred / np.maximum(norms, 1e-6)).astype(np.float32)

    @property
    def dim(self) -> int:
        return int(self.rows.shape[1])

    @property
    def vocab_size(self) -> int:
        return int(self.rows.shape[0])

    def scores(self, actions: np.ndarray, tracks: np.ndarray) -> np.ndarray:
        """Each row's action against its own tracks: actions [B, D], tracks [B] or [B, K] -> [B] or [B, K]."""
        if tracks.ndim == 1:
            return np.einsum("bd,bd->b", actions, self.choice[tracks])
        return np.einsum("bd,bkd->bk", actions, self.choice[tracks])

    def top(self, actions: np.ndarray, k: int) -> np.ndarray:
        """The k real tracks of highest score for each action, best first: int64 [B, k] (whole vocabulary)."""
        import torch

        scores = torch.from_numpy(actions) @ torch.from_numpy(self.choice[FIRST_TRACK_ID:]).T  # (B, V - reserved)
        best = scores.topk(min(k, scores.shape[1]), dim=1).indices.numpy()
        return best.astype(np.int64) + FIRST_TRACK_ID


def dense_reward(task: str, actions: np.ndarray, positives: np.ndarray, listened: np.ndarray, table: TrackTable) -> np.ndarray:
    """``1 - |a / sqrt(A) - y|^2 / 2`` per row (see the module docstring): float32 [B]."""
    if task == "skip":
        target = np.where(listened, 1.0, -1.0)[:, None]
    else:
        target = table.choice[positives]
    scaled = actions / np.sqrt(actions.shape[1])
    return (1.0 - ((scaled - target) ** 2).sum(axis=1) / 2.0).astype(np.float32)


def paper_reward(task: str, actions, positives, listened, table: TrackTable, sampler: NegativeSampler) -> np.ndarray:
    """The paper's reward for the choice among the logged track and sampled negatives: float32 [B]."""
    negatives = sampler.sample(positives)  # (B, R)
    # The logged track is chosen when it beats every negative; a tie is a miss, so an all-zero
    # action (e.g. fully masked by exploration) earns nothing.
    hit = table.scores(actions, positives) > table.scores(actions, negatives).max(axis=1)
    if task == "skip":
        return np.where(hit, np.where(listened, 1.0, -1.0), 0.0).astype(np.float32)
    return hit.astype(np.float32)


class Replay:
    """The state of a batch of rows, each replaying one session of `data` (the prepared split's task batch).

    ``start(sessions)`` points every row at a session and resets it to the
    start of its output half; ``restart(rows, sessions)`` does that for some
    rows only (an environment's autoreset). Each step, ``observation()`` is
    what the agent sees, and ``advance(played, push, skipped)`` moves every
    row one position on: `played` joins the history where `push` is True, and
    `skipped` is the position's skip (the logged one in training, the agent's
    own in evaluation), which the ``dense`` skip state shows at the next step.
    """

    def __init__(self, data: dict[str, np.ndarray], task: str, formulation: str, table: TrackTable):
        self.data, self.task, self.formulation, self.table = data, check_task(task), check_formulation(formulation), table
        self.context = session_context(data)
        self.first_history = initial_history(data, task)
        rows = np.arange(len(data["n_in"]))
        self.first_skip = data["in_skip_2"][rows, np.maximum(data["n_in"] - 1, 0)].astype(np.float32)
        self.start(np.zeros(0, np.int64))

    @property
    def num_sessions(self) -> int:
        return len(self.context)

    def start(self, sessions: np.ndarray) -> None:
        self.sessions = np.asarray(sessions, dtype=np.int64).copy()
        self.step = np.zeros(len(self.sessions), np.int64)
        self.history = self.first_history[self.sessions].copy()
        self.previous_skip = self.first_skip[self.sessions].copy()

    def restart(self, rows: np.ndarray, sessions: np.ndarray) -> None:
        self.sessions[rows] = sessions
        self.step[rows] = 0
        self.history[rows] = self.first_history[sessions]
        self.previous_skip[rows] = self.first_skip[sessions]

    def positives(self) -> np.ndarray:
        """The logged track at each row's position, [B]."""
        return self.data["out_tracks"][self.sessions, np.minimum(self.step, HALF_LENGTH - 1)]

    def listened(self) -> np.ndarray:
        """Whether each row's logged track was listened (skip_2 = 0), [B]."""
        return self.data["out_skip_2"][self.sessions, np.minimum(self.step, HALF_LENGTH - 1)] == 0

    def finished(self) -> np.ndarray:
        """Rows past the last position of their output half, [B]."""
        return self.step >= self.data["n_out"][self.sessions]

    def observation(self) -> np.ndarray:
        """What the agent sees at each row's position, float32 [B, observation_size]."""
        rows = self.table.rows
        state = build_observation(self.context[self.sessions], self.step.astype(np.float32), self.history, rows)
        if not scores_played_track(self.task, self.formulation):
            return state
        played = rows[self.positives()]  # (B, D): the task gives the second half's track ids
        session = _session_embedding(self.history, rows[self.history])
        return np.concatenate([state, played, played * session, self.previous_skip[:, None]], axis=1).astype(np.float32)

    def advance(self, played: np.ndarray, push: np.ndarray, skipped: np.ndarray) -> None:
        self.history = push_history(self.history, played, push)
        self.previous_skip = skipped.astype(np.float32)
        self.step = self.step + 1


class SessionReplayEnv(gym.vector.VectorEnv):
    """``num_envs`` sessions of one split replayed at once; see the module docstring.

    ``config`` keys: ``data_dir`` (prepared dataset), ``embeddings_path``
    (``.npy`` table [vocab_size, D]), ``task`` ("skip" | "seq"),
    ``formulation`` (default "dense"), ``split`` (default "train"),
    ``protocol`` (default "paper"), ``negative_ratio`` (default 99),
    ``negative_sampling`` ("popularity" | "uniform"), ``seed``, ``num_envs``
    (default 1). ``reset(options={"sessions": [...]})`` replays those sessions
    (one per row) instead of random ones.

    Autoreset follows gymnasium's NEXT_STEP mode, the one RLlib's env runners
    expect: the ``step`` after a row's episode terminated starts that row's
    next session and returns its first observation, reward 0 and not
    terminated, whatever the action.
    """

    metadata = {"render_modes": [], "autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, config: dict | None = None):
        config = dict(config or {})
        missing = [key for key in ("data_dir", "embeddings_path", "task") if key not in config]
        if missing:
            raise ValueError(f"SessionReplayEnv needs env_config keys {', '.join(missing)}")
        self.task = check_task(config["task"])
        self.formulation = check_formulation(config.get("formulation", "dense"))
        dataset = open_prepared(config["data_dir"])
        split, protocol = config.get("split", "train"), config.get("protocol", "paper")
        data = dataset.numpy_split(split, protocol)
        if len(data["length"]) == 0:
            raise ValueError(
                f"{config['data_dir']}: split {split!r} has no session under protocol {protocol!r}; "
                "use another protocol or more data"
            )
        self.table = TrackTable(load_table(config["embeddings_path"], dataset.vocab_size), self.formulation)
        self.sampler = NegativeSampler(
            play_counts(dataset.vocab, dataset.vocab_size),
            ratio=int(config.get("negative_ratio", 99)),
            mode=config.get("negative_sampling", "popularity"),
            seed=int(config.get("seed", 0)),
        )
        self.replay = Replay(data, self.task, self.formulation, self.table)
        self.num_envs = int(config.get("num_envs", 1))
        dim = self.table.dim
        magnitude = float(max(1.0, np.abs(self.table.rows).max()))
        bound = magnitude**2  # context <= 1, embeddings <= magnitude, products <= magnitude^2
        self.single_observation_space = gym.spaces.Box(-bound, bound, (observation_size(self.task, self.formulation, dim),), np.float32)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (action_size(self.task, self.formulation, dim),), np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._rng = np.random.default_rng(int(config.get("seed", 0)))
        self._needs_restart = np.zeros(self.num_envs, bool)

    def _draw_sessions(self, n: int) -> np.ndarray:
        return self._rng.integers(self.replay.num_sessions, size=n)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self.sampler.rng = np.random.default_rng(seed + 1)
        sessions = (options or {}).get("sessions")
        sessions = self._draw_sessions(self.num_envs) if sessions is None else np.asarray(sessions, dtype=np.int64)
        if len(sessions) != self.num_envs:
            raise ValueError(f"reset(options={{'sessions': ...}}) needs {self.num_envs} sessions, one per row")
        self.replay.start(sessions)
        self._needs_restart[:] = False
        return self.replay.observation(), {}

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, -1)
        replay = self.replay
        positives, listened = replay.positives(), replay.listened()
        if self.formulation == "paper":
            rewards = paper_reward(self.task, actions, positives, listened, self.table, self.sampler)
        else:
            rewards = dense_reward(self.task, actions, positives, listened, self.table)
        push = listened if self.task == "skip" else np.ones(self.num_envs, bool)
        replay.advance(positives, push, ~listened)
        restarting = self._needs_restart
        if restarting.any():
            replay.restart(np.flatnonzero(restarting), self._draw_sessions(int(restarting.sum())))
            rewards[restarting] = 0.0
        terminated = replay.finished() & ~restarting
        self._needs_restart = terminated.copy()
        truncated = np.zeros(self.num_envs, bool)
        return replay.observation(), rewards, terminated, truncated, {}


def load_table(path: str | Path, vocab_size: int) -> np.ndarray:
    """The fixed track embedding table, float32 [vocab_size, D], reserved rows zeroed."""
    table = np.load(path, allow_pickle=False).astype(np.float32)
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
    """Register the environment with Ray Tune's registry under ENV_NAME (idempotent).

    The creator returns the vector environment itself: configure RLlib with
    ``env_runners(gym_env_vectorize_mode="vector_entry_point")``, and RLlib
    calls it with ``env_config | {"num_envs": num_envs_per_env_runner}``.
    """
    from ray.tune.registry import register_env

    register_env(ENV_NAME, lambda env_config: SessionReplayEnv(dict(env_config)))
