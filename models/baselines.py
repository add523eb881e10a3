"""Simple baselines for both tasks, scored with the same metrics on the same splits.

Each baseline is a class with ``fit(train, vocab_size=None) -> self`` and ``predict(batch) ->
np.ndarray`` int64 [B, 10], where ``train`` and ``batch`` are task batches of
``data_pipeline.dataset`` (``PreparedDataset.numpy_split`` or one batch of it).
Positions outside ``out_mask`` hold a prediction too; metrics ignore them.
The seq baselines also ``rank(batch, k)``: int64 [B, 10, k], each position's k
best tracks, best first, for the ranking metrics (``models.metrics``); like
the models, they rank a position knowing the true tracks before it.

skip task (predict skip_2 of the output half; 1 = skipped):
- ``all_skip`` / ``no_skip``: the constant predictors (the paper's 30.5% "all
  skips" row matches neither: on real sessions all-skip scores about 0.41-0.46
  and no-skip 0.32-0.37; both are computed).
- ``session_majority``: the input half's majority skip class, repeated; a tie
  (or an empty input half) takes the majority class of the training outputs.
- ``copy_last_skip``: the last input skip repeated (the WSDM Cup's reference).

seq task (predict the 10 next track ids; reserved ids are never predicted):
- ``random``: uniform over the vocabulary's tracks (the paper's row).
- ``most_popular``: the most played training track at every position. Under
  position-wise exact matching this is the best constant predictor; listing the
  top 10 in order would score the runners-up only at later positions.
- ``markov``: first-order transitions counted in training sessions: the most
  frequent successor of the last input track, chained greedily for 10 steps;
  ties go to the more popular track (smaller id); a track never followed in
  training falls back to ``most_popular``.
- ``session_knn``: the k training sessions most similar to the input half
  (cosine over item sets). Each neighbour votes, with its similarity, for the
  tracks that follow its last track shared with the input, position by
  position; the top-voted track wins each position, ``most_popular`` where
  no neighbour votes.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from data_pipeline.dataset import HALF_LENGTH
from data_pipeline.schema import FIRST_TRACK_ID


def _full_sessions(data: dict[str, np.ndarray]) -> np.ndarray:
    """Each session's tracks in order (input half then output half), 0-padded: int64 [N, 20]."""
    n_in = data["n_in"]
    tracks = np.zeros((len(n_in), 2 * HALF_LENGTH), dtype=np.int64)
    tracks[:, :HALF_LENGTH] = data["in_tracks"]
    rows, cols = np.nonzero(data["out_mask"])
    tracks[rows, n_in[rows] + cols] = data["out_tracks"][rows, cols]
    return tracks


def _last_input(data: dict[str, np.ndarray], column: str) -> np.ndarray:
    """The last value of `in_<column>` in each session (0 for an empty input half): [B]."""
    last = np.maximum(data["n_in"] - 1, 0)
    values = np.take_along_axis(data[f"in_{column}"], last[:, None], axis=1)[:, 0]
    return np.where(data["n_in"] > 0, values, 0)


# ---------------------------------------------------------------------------
# skip task
# ---------------------------------------------------------------------------


class AllSkip:
    """Every output track skipped."""

    def fit(self, train: dict[str, np.ndarray], vocab_size: int | None = None) -> "AllSkip":
        return self

    def predict(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return np.ones(batch["out_mask"].shape, dtype=np.int64)


class NoSkip:
    """No output track skipped."""

    def fit(self, train: dict[str, np.ndarray], vocab_size: int | None = None) -> "NoSkip":
        return self

    def predict(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return np.zeros(batch["out_mask"].shape, dtype=np.int64)


class SessionMajority:
    """The input half's majority skip class; ties go to the training majority."""

    def fit(self, train: dict[str, np.ndarray], vocab_size: int | None = None) -> "SessionMajority":
        labels = train["out_skip_2"][train["out_mask"]]
        self.tie_class = int(labels.mean() >= 0.5) if len(labels) else 1
        return self

    def predict(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        skipped = (batch["in_skip_2"] * batch["in_mask"]).sum(axis=1)
        kept = batch["in_mask"].sum(axis=1) - skipped
        majority = np.where(skipped > kept, 1, np.where(kept > skipped, 0, self.tie_class))
        return np.repeat(majority[:, None], batch["out_mask"].shape[1], axis=1).astype(np.int64)


class CopyLastSkip:
    """The last input skip flag, repeated (the WSDM Cup 2019 reference baseline)."""

    def fit(self, train: dict[str, np.ndarray], vocab_size: int | None = None) -> "CopyLastSkip":
        return self

    def predict(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        last = _last_input(batch, "skip_2")
        return np.repeat(last[:, None], batch["out_mask"].shape[1], axis=1).astype(np.int64)


# ---------------------------------------------------------------------------
# seq task
# ---------------------------------------------------------------------------


def _track_counts(train: dict[str, np.ndarray], vocab_size: int | None) -> np.ndarray:
    """Play counts of every vocabulary id in the training sessions (reserved ids zeroed)."""
    tracks = _full_sessions(train)
    size = max(int(tracks.max(initial=0)) + 1, vocab_size or 0, FIRST_TRACK_ID + 1)
    counts = np.bincount(tracks.ravel(), minlength=size).astype(np.int64)
    counts[:FIRST_TRACK_ID] = 0
    return counts


class RandomTrack:
    """Uniform over the vocabulary's tracks (ids FIRST_TRACK_ID .. vocab_size-1)."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, train: dict[str, np.ndarray], vocab_size: int | None = None) -> "RandomTrack":
        self.vocab_size = len(_track_counts(train, vocab_size))
        self.rng = np.random.default_rng(self.seed)
        return self

    def predict(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.rng.integers(FIRST_TRACK_ID, self.vocab_size, size=batch["out_mask"].shape, dtype=np.int64)

    def rank(self, batch: dict[str, np.ndarray], k: int) -> np.ndarray:
        return self.rng.integers(FIRST_TRACK_ID, self.vocab_size, size=(*batch["out_mask"].shape, k), dtype=np.int64)


def _top_popular(counts: np.ndarray, k: int) -> np.ndarray:
    """The k most played track ids (ties: smaller id first), padded with the last one when fewer exist."""
    order = np.lexsort((np.arange(len(counts)), -counts))
    order = order[order >= FIRST_TRACK_ID][:k]
    if len(order) == 0:
        order = np.array([FIRST_TRACK_ID])
    return np.concatenate([order, np.full(k - len(order), order[-1])]).astype(np.int64) if len(order) < k else order


class MostPopular:
    """The most played training track at every position."""

    def fit(self, train: dict[str, np.ndarray], vocab_size: int | None = None) -> "MostPopular":
        self.counts = _track_counts(train, vocab_size)
        self.track = int(np.argmax(self.counts)) if self.counts.any() else FIRST_TRACK_ID
        return self

    def predict(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return np.full(batch["out_mask"].shape, self.track, dtype=np.int64)

    def rank(self, batch: dict[str, np.ndarray], k: int) -> np.ndarray:
        return np.broadcast_to(_top_popular(self.counts, k), (*batch["out_mask"].shape, k)).copy()


class MarkovChain:
    """First-order transitions: the most frequent successor, chained greedily."""

    def fit(self, train: dict[str, np.ndarray], vocab_size: int | None = None) -> "MarkovChain":
        counts = _track_counts(train, vocab_size)
        self.counts = counts
        self.popular = int(np.argmax(counts)) if counts.any() else FIRST_TRACK_ID
        size = len(counts)
        tracks = _full_sessions(train)
        prev, nxt = tracks[:, :-1].ravel(), tracks[:, 1:].ravel()
        keep = (prev >= FIRST_TRACK_ID) & (nxt >= FIRST_TRACK_ID)
        self.transitions = sp.coo_matrix(
            (np.ones(int(keep.sum()), dtype=np.int64), (prev[keep], nxt[keep])), shape=(size, size)
        ).tocsr()  # duplicates summed
        self.transitions.sum_duplicates()
        # successor[v] = argmax_w count(v -> w), smallest w on ties; popular when v has none
        self.successor = self.successors(1)[:, 0]
        return self

    def successors(self, k: int) -> np.ndarray:
        """int64 [V, k]: each track's k most frequent successors (ties: smaller id), then popular tracks."""
        matrix = self.transitions
        size = matrix.shape[0]
        rows = np.repeat(np.arange(size), np.diff(matrix.indptr))
        order = np.lexsort((matrix.indices, -matrix.data, rows))  # by row, count descending, id
        rank = np.arange(len(order)) - matrix.indptr[rows[order]]
        top = rank < k
        out = np.broadcast_to(_top_popular(self.counts, k), (size, k)).copy()
        out[rows[order][top], rank[top]] = matrix.indices[order][top]
        return out

    def predict(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        current = _last_input(batch, "tracks")
        known = (current >= FIRST_TRACK_ID) & (current < len(self.successor))
        current = np.where(known, current, 0)
        steps = []
        for step in range(batch["out_mask"].shape[1]):
            if step == 0:
                current = np.where(known, self.successor[current], self.popular)
            else:
                current = self.successor[current]
            steps.append(current)
        return np.stack(steps, axis=1).astype(np.int64)

    def rank(self, batch: dict[str, np.ndarray], k: int) -> np.ndarray:
        """At each position, the k most frequent successors of the true previous track."""
        previous = np.concatenate([_last_input(batch, "tracks")[:, None], batch["out_tracks"][:, :-1]], axis=1)
        known = (previous >= FIRST_TRACK_ID) & (previous < len(self.successor))
        table = self.successors(k)
        return np.where(known[..., None], table[np.where(known, previous, 0)], _top_popular(self.counts, k))


class SessionKNN:
    """Session-based kNN over training sessions, voting position by position."""

    def __init__(self, k: int = 50, chunk_size: int = 512):
        self.k = k
        self.chunk_size = chunk_size

    def fit(self, train: dict[str, np.ndarray], vocab_size: int | None = None) -> "SessionKNN":
        counts = _track_counts(train, vocab_size)
        self.counts = counts
        self.size = len(counts)
        self.popular = int(np.argmax(counts)) if counts.any() else FIRST_TRACK_ID
        self.sessions = _full_sessions(train)  # (N, 20)
        self.items = self._item_sets(self.sessions)  # (N, V) binary
        self.norms = np.sqrt(np.asarray(self.items.sum(axis=1)).ravel())
        return self

    def _item_sets(self, tracks: np.ndarray) -> sp.csr_matrix:
        rows = np.repeat(np.arange(len(tracks)), tracks.shape[1])
        cols = tracks.ravel()
        keep = (cols >= FIRST_TRACK_ID) & (cols < self.size)
        matrix = sp.csr_matrix(
            (np.ones(int(keep.sum()), dtype=np.float32), (rows[keep], cols[keep])), shape=(len(tracks), self.size)
        )
        matrix.data[:] = 1.0  # a set: repeated tracks count once
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix

    def predict(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.rank(batch, 1)[..., 0]

    def rank(self, batch: dict[str, np.ndarray], k: int) -> np.ndarray:
        """Each position's k most voted tracks, then popular tracks where fewer got votes."""
        width = batch["out_mask"].shape[1]
        out = np.empty((len(batch["n_in"]), width, k), dtype=np.int64)
        for start in range(0, len(out), self.chunk_size):
            stop = start + self.chunk_size
            out[start:stop] = self._rank_chunk(batch["in_tracks"][start:stop], width, k)
        return out

    def _rank_chunk(self, in_tracks: np.ndarray, width: int, k: int) -> np.ndarray:
        queries = self._item_sets(in_tracks)
        query_norms = np.sqrt(np.asarray(queries.sum(axis=1)).ravel())
        overlap = (queries @ self.items.T).tocsr()  # (Q, N) shared items
        out = np.broadcast_to(_top_popular(self.counts, k), (len(in_tracks), width, k)).copy()
        padded = np.concatenate([self.sessions, np.zeros((len(self.sessions), width), np.int64)], axis=1)
        for q in range(len(in_tracks)):
            start, end = overlap.indptr[q], overlap.indptr[q + 1]
            if start == end:
                continue
            neighbours = overlap.indices[start:end]
            similarity = overlap.data[start:end] / (query_norms[q] * self.norms[neighbours])
            if len(neighbours) > self.k:
                top = np.argpartition(-similarity, self.k)[: self.k]
                neighbours, similarity = neighbours[top], similarity[top]
            tracks = self.sessions[neighbours]  # (k, 20)
            shared = np.isin(tracks, in_tracks[q][in_tracks[q] >= FIRST_TRACK_ID])
            last_shared = tracks.shape[1] - 1 - np.argmax(shared[:, ::-1], axis=1)  # (k,)
            follow = padded[neighbours[:, None], last_shared[:, None] + 1 + np.arange(width)]  # (k, width)
            position = np.broadcast_to(np.arange(width), follow.shape)
            valid = follow >= FIRST_TRACK_ID
            if not valid.any():
                continue
            keys = position[valid] * self.size + follow[valid]
            weights = np.broadcast_to(similarity[:, None], follow.shape)[valid]
            unique, inverse = np.unique(keys, return_inverse=True)
            votes = np.bincount(inverse, weights=weights)
            # per position: sort by (position, -votes, key); the first k of each position are its ranking
            order = np.lexsort((unique, -votes, unique // self.size))
            ranked = unique[order]
            pos = ranked // self.size
            first_of_position = np.searchsorted(pos, pos, side="left")
            rank = np.arange(len(ranked)) - first_of_position
            keep = rank < k
            out[q, pos[keep], rank[keep]] = ranked[keep] % self.size
        return out


BASELINES: dict[str, dict[str, type]] = {
    "skip": {
        "all_skip": AllSkip,
        "no_skip": NoSkip,
        "session_majority": SessionMajority,
        "copy_last_skip": CopyLastSkip,
    },
    "seq": {
        "random": RandomTrack,
        "most_popular": MostPopular,
        "markov": MarkovChain,
        "session_knn": SessionKNN,
    },
}


def get_baseline(task: str, name: str):
    """A fresh baseline instance; errors name the known tasks and baselines."""
    if task not in BASELINES:
        raise ValueError(f"unknown task {task!r}: choose one of {', '.join(BASELINES)}")
    if name not in BASELINES[task]:
        raise ValueError(f"no {task} baseline named {name!r}: choose one of {', '.join(BASELINES[task])}")
    return BASELINES[task][name]()
