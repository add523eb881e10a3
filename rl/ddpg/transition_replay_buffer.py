"""Uniform replay of single transitions, stored in preallocated numpy arrays.

RLlib's `EpisodeReplayBuffer` keeps episode objects and builds every sampled
item by slicing one (about a millisecond per item here): a batch of 512 costs
half a second, far more than the update it feeds. DDPG needs only single
transitions (1-step TD targets), so this buffer flattens the EnvRunners'
episodes into columns once, when they are added, and samples a batch with one
fancy-indexing operation per column.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from ray.rllib.core.columns import Columns
from ray.rllib.utils.annotations import override
from ray.rllib.utils.replay_buffers.base import ReplayBufferInterface

COLUMNS = (Columns.OBS, Columns.ACTIONS, Columns.REWARDS, Columns.NEXT_OBS, Columns.TERMINATEDS)


class TransitionReplayBuffer(ReplayBufferInterface):
    """A ring of `capacity` transitions (obs, action, reward, next obs, terminated), sampled uniformly."""

    def __init__(self, capacity: int = 100_000, seed: Optional[int] = None, **kwargs):
        if int(capacity) < 1:
            raise ValueError(f"replay buffer capacity must be at least 1 transition, got {capacity}")
        self.capacity = int(capacity)
        self.rng = np.random.default_rng(seed)
        self._columns: Dict[str, np.ndarray] = {}  # allocated on the first add, when the shapes are known
        self._size = 0
        self._next = 0  # where the next transition is written
        self.num_added = 0

    @override(ReplayBufferInterface)
    def __len__(self) -> int:
        return self._size

    @override(ReplayBufferInterface)
    def add(self, batch: List[Any], **kwargs) -> None:
        """Store every transition of a list of (numpy) `SingleAgentEpisode` chunks."""
        parts = [_transitions(episode) for episode in batch if len(episode) > 0]
        if not parts:
            return
        new = {name: np.concatenate([part[name] for part in parts]) for name in COLUMNS}
        n = len(new[Columns.REWARDS])
        if not self._columns:
            self._columns = {name: np.zeros((self.capacity, *v.shape[1:]), v.dtype) for name, v in new.items()}
        if n > self.capacity:  # more than fits: only the newest are kept
            new, n = {name: v[-self.capacity :] for name, v in new.items()}, self.capacity
        slots = (self._next + np.arange(n)) % self.capacity
        for name, values in new.items():
            self._columns[name][slots] = values
        self._next = int((self._next + n) % self.capacity)
        self._size = min(self._size + n, self.capacity)
        self.num_added += n

    @override(ReplayBufferInterface)
    def sample(self, num_items: Optional[int] = None, **kwargs) -> Dict[str, np.ndarray]:
        """`num_items` transitions drawn uniformly with replacement, as a dict of column arrays."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        index = self.rng.integers(self._size, size=int(num_items))
        return {name: column[index] for name, column in self._columns.items()}

    @override(ReplayBufferInterface)
    def get_state(self) -> Dict[str, Any]:
        return {"columns": dict(self._columns), "size": self._size, "next": self._next, "num_added": self.num_added}

    @override(ReplayBufferInterface)
    def set_state(self, state: Dict[str, Any]) -> None:
        self._columns = {name: np.array(column) for name, column in state["columns"].items()}
        self._size, self._next, self.num_added = int(state["size"]), int(state["next"]), int(state["num_added"])


def _transitions(episode) -> Dict[str, np.ndarray]:
    """One episode chunk as columns of its T transitions (its T + 1 observations give obs and next obs)."""
    observations = np.asarray(episode.get_observations(), dtype=np.float32)
    length = len(episode)
    terminated = np.zeros(length, dtype=bool)
    terminated[-1] = episode.is_terminated
    return {
        Columns.OBS: observations[:-1],
        Columns.ACTIONS: np.asarray(episode.get_actions(), dtype=np.float32).reshape(length, -1),
        Columns.REWARDS: np.asarray(episode.get_rewards(), dtype=np.float32),
        Columns.NEXT_OBS: observations[1:],
        Columns.TERMINATEDS: terminated,
    }
