"""Synthetic MSSD: session logs and track features in the real file format.

The embedded default dataset of the product. ``generate(SynthConfig(...), out)``
(or ``python -m data_pipeline.synth``) writes

- ``log_<i>_<YYYYMMDD>_000000000000.csv[.gz]``: the 21 ``schema.LOG_COLUMNS``
  in order, booleans ``true``/``false``, dates ISO, rows ordered by session then
  position, each session contiguous in one file. File ``i`` holds one day (a
  day is split over several files only when it has more than
  ``rows_per_file`` rows); session ids are ``<i>_<uuid4>``, so with one file
  per day the prefix is the day index, as in real MSSD.
  With ``output_format="parquet"``: ``log_<i>_<YYYYMMDD>.parquet``, same
  columns, typed as ``schema.LOG_COLUMNS`` (booleans as bool).
- ``tf_000000000000.csv``: the 30 ``schema.TRACK_FEATURE_COLUMNS`` for every
  track (ids ``t_<uuid4>``), so every logged track has a feature row.

Everything is drawn from ``numpy`` generators seeded by ``seed``: the same
config gives the same bytes. Sessions are generated in chunks of
``chunk_sessions`` (memory stays bounded); each chunk has its own stream.

Generative model
----------------
Tracks. ``tracks`` tracks, popularity Zipf-like: the track of rank r has
weight ``(r + 1) ** -zipf_exponent``. Each track belongs to one of
``ceil(tracks / tracks_per_genre)`` genres (clusters). A genre has a centroid
in feature space (acoustic vectors, tempo, energy, acousticness, ...); a
track's features are its genre centroid plus noise. Each track has a latent
quality ``q ~ N(0, 1)`` that shows in its features (danceability, energy,
valence, ``acoustic_vector_7`` and ``us_popularity_estimate`` move with q), so
skips are partly predictable from features. Each track has
``successors_per_track`` successor tracks from its own genre (drawn by
popularity, weights 1/2, 1/4, ... ): the "next track" habit of listeners.

Sessions. Length L in 10..20 with the real sample's mix (``LENGTH_COUNTS``).
Two kinds:

- Playlist sessions (share ``playlist_share``): ``n_playlists`` curated
  playlists are fixed ordered track sequences of ``playlist_length_min`` ..
  ``playlist_length_max`` tracks from one genre, chosen with Zipf weights
  (``playlist_zipf_exponent``). The session plays a contiguous run of its
  playlist: from the start with probability ``playlist_from_start``, else
  from a random offset. A model that has seen the playlist can predict such a
  session's second half 10/10. Never shuffled; context_type mostly
  ``editorial_playlist``.
- Drift sessions: a home genre drawn by genre popularity and a first track
  from it; then at each step the next track is, with probability
  ``markov_strength``, a successor of the current track; else with
  probability ``genre_stay`` a popular track of the home genre; else a
  track drawn by global popularity (drift to another genre). Markov, kNN and
  sequence models can learn these transitions. Shuffled with probability
  ``shuffle_share``; context_type user_collection / catalog / radio.

Skips (label ``skip_2``). Each session draws a skip propensity
``p ~ Beta(skip_rate * c, (1 - skip_rate) * c)`` with
``c = skip_propensity_concentration`` (small c: sessions are mostly skippy or
mostly not). Position by position:

    logit P(skip_2) = intercept + logit(p)
                      - quality_effect * q(track)
                      + off_genre_effect * [track's genre != session's home genre]
                      + shuffle_effect * is_shuffle
                      + previous_skip_effect * skip_2(previous track)
                      + fwdbtn_effect / clickrow_effect / backbtn_effect
                        by this track's reason_start (0 for the others)

``intercept`` is calibrated once per config (bisection on a 10K-session
calibration sample) so that the overall skip_2 rate is ``skip_rate``
(realised rates land within about 0.005 of it).
Then the finer flags: a skip_2 is a skip_1 with probability
``skip_1_given_skip_2``; a non-skip_2 is a skip_3 with probability
``skip_3_given_not_skip_2``; a non-skip_3 played to the end (not_skipped)
with probability 0.945. So skip_1 ⊂ skip_2 ⊂ skip_3 and not_skipped implies
not skip_3. ``reason_end`` is drawn given those flags (skipped tracks end
mostly with fwdbtn, some backbtn / endplay; played tracks with trackdone), as
measured on the real sample, and the next track's ``reason_start`` follows
from it (fwdbtn -> fwdbtn, trackdone -> trackdone, backbtn -> backbtn,
endplay -> clickrow, ...). The first track's reason_start follows the real
first-position mix.

Other columns, plausible and as in the real sample: pauses before play
depend on reason_start (trackdone: more long pauses), a context switch comes
with some clickrow / appload starts, seeks are rare (about 3%), hour of day
per session from the sample's daily curve, premium with ``premium_share``,
date = the file's day (``start_date`` + day index).

What that gives, measured on the embedded default (20,000 sessions, 2,000
tracks, 3 days, seed 0; 80/20 session split, challenge protocol for skips,
20-track sessions for next tracks):

- rows: skip_1 0.43, skip_2 0.52, skip_3 0.65, not_skipped 0.33;
  P(skip_2 | previous skipped) 0.75, P(skip_2 | previous played) 0.29
  (real sample: 0.425 / 0.519 / 0.650 / 0.330; 0.75 / 0.28); context_type,
  reason_start, reason_end, pauses, shuffle and premium mixes within a few
  points of the real sample;
- skip task: copying the last first-half skip scores MAA 0.54 (first
  position 0.72; real data 0.53 / 0.74); a logistic rule on per-track skip
  rate, first-half skip rate and last skip scores 0.63;
- next tracks: most-popular MAA 0.01; a greedy first-order Markov chain
  0.19, with 8% of sessions right 10/10 (playlist sessions).

Usage::

    python -m data_pipeline.synth --sessions 20000 --tracks 2000 --days 3 --seed 0 --out data/raw
    python -m data_pipeline.synth ... --gzip                 # log_*.csv.gz
    python -m data_pipeline.synth ... --format parquet       # large runs
    python -m data_pipeline.synth ... --set zipf_exponent=1.2 --set playlist_share=0.4
"""

from __future__ import annotations

import argparse
import gzip
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from data_pipeline.schema import LOG_COLUMNS, MAX_SESSION_LENGTH, MIN_SESSION_LENGTH, TRACK_FEATURE_COLUMNS

# Sessions per length 10..20 in the real sample (SOURCE.md).
LENGTH_COUNTS = (347, 302, 276, 221, 185, 187, 139, 128, 123, 124, 2124)
# Rows per hour of day 0..23 in the real sample.
HOUR_COUNTS = (2513, 1536, 1157, 964, 496, 429, 719, 927, 1373, 2016, 3133, 3673,
               4425, 4574, 5001, 5015, 4353, 4487, 4035, 4354, 3931, 4180, 3565, 2966)

# Categorical values this generator uses (a subset of schema.CATEGORICAL_VALUES).
CONTEXT_TYPES = ("user_collection", "catalog", "editorial_playlist", "radio", "personalized_playlist", "charts")
CONTEXT_MIX_PLAYLIST = (0.02, 0.0, 0.85, 0.0, 0.07, 0.06)
CONTEXT_MIX_DRIFT = (0.55, 0.29, 0.0, 0.16, 0.0, 0.0)

REASON_START = ("trackdone", "fwdbtn", "backbtn", "clickrow", "appload", "playbtn", "remote")
RS_TRACKDONE, RS_FWDBTN, RS_BACKBTN, RS_CLICKROW, RS_APPLOAD = 0, 1, 2, 3, 4
FIRST_REASON_START_MIX = (0.275, 0.257, 0.046, 0.264, 0.142, 0.010, 0.006)

REASON_END = ("trackdone", "fwdbtn", "backbtn", "endplay", "logout", "remote")
# Skip levels: the finest flag that holds for a play.
LEVEL_SKIP_1, LEVEL_SKIP_2, LEVEL_SKIP_3, LEVEL_NOT_SKIPPED, LEVEL_NONE = 0, 1, 2, 3, 4
# P(reason_end | level), rows = levels, columns = REASON_END (real sample, rounded).
REASON_END_GIVEN_LEVEL = (
    (0.001, 0.785, 0.153, 0.060, 0.001, 0.0),  # skip_1
    (0.008, 0.645, 0.074, 0.263, 0.006, 0.004),  # skip_2 only
    (0.038, 0.639, 0.050, 0.251, 0.016, 0.006),  # skip_3 only
    (0.991, 0.004, 0.0, 0.005, 0.0, 0.0),  # played to the end
    (0.381, 0.397, 0.028, 0.180, 0.012, 0.002),  # neither
)
# P(next reason_start | reason_end), rows = REASON_END, columns = REASON_START.
NEXT_REASON_START = (
    (0.98, 0.0, 0.0, 0.02, 0.0, 0.0, 0.0),  # trackdone
    (0.0, 0.995, 0.0, 0.005, 0.0, 0.0, 0.0),  # fwdbtn
    (0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0),  # backbtn
    (0.0, 0.0, 0.0, 0.94, 0.03, 0.015, 0.015),  # endplay
    (0.0, 0.0, 0.0, 0.35, 0.6, 0.05, 0.0),  # logout
    (0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.5),  # remote
)
NOT_SKIPPED_GIVEN_NOT_SKIP_3 = 0.945
# P(long pause before play | reason_start), columns = REASON_START.
LONG_PAUSE_GIVEN_REASON_START = (0.33, 0.087, 0.086, 0.134, 0.155, 0.17, 0.21)
SHORT_GIVEN_LONG_PAUSE = 0.85
NO_PAUSE_GIVEN_NOT_LONG = 0.93
CONTEXT_SWITCH_GIVEN_CLICKROW = 0.37
CONTEXT_SWITCH_GIVEN_APPLOAD = 0.09
SEEK_FWD_SHARE, SEEK_BACK_SHARE = 0.028, 0.032

# Seed-sequence streams: one per purpose, so adding one never shifts another.
_STREAM_CATALOG, _STREAM_SESSIONS, _STREAM_CALIBRATION = 0, 1, 2
_CALIBRATION_SESSIONS = 10_000


class SynthError(ValueError):
    """A bad generator configuration or output directory."""


@dataclass
class SynthConfig:
    """Every knob of the synthetic MSSD generator (see the module docstring)."""

    sessions: int = 20_000  # sessions in all, spread evenly over the days
    tracks: int = 5_000  # tracks in the catalogue (each gets a tf row)
    days: int = 2  # days = log files (one per day unless rows_per_file splits it)
    seed: int = 0  # same seed + same config -> identical files
    start_date: str = "2018-07-15"  # ISO date of day 0; day d is start_date + d days
    # catalogue
    zipf_exponent: float = 1.0  # track popularity weight (rank + 1) ** -zipf_exponent
    tracks_per_genre: int = 100  # genres = ceil(tracks / tracks_per_genre)
    successors_per_track: int = 4  # each track's usual next tracks (same genre)
    # playlist sessions
    playlist_share: float = 0.25  # share of sessions that play a curated playlist
    n_playlists: int = 200  # curated playlists (fixed ordered track sequences)
    playlist_length_min: int = 20  # tracks per playlist, drawn uniformly in [min, max]
    playlist_length_max: int = 50
    playlist_zipf_exponent: float = 1.0  # playlist popularity weight (rank + 1) ** -x
    playlist_from_start: float = 0.6  # P(a playlist session starts at the playlist's first track)
    # drift sessions
    markov_strength: float = 0.6  # P(next track = a successor of the current track)
    genre_stay: float = 0.3  # P(next track = a popular track of the home genre); rest: any genre
    shuffle_share: float = 0.41  # P(shuffle) for a drift session (playlist sessions never shuffle)
    premium_share: float = 0.81  # P(premium user), per session
    # skips
    skip_rate: float = 0.52  # overall skip_2 rate the intercept is calibrated to
    skip_propensity_concentration: float = 3.0  # c of the per-session Beta propensity (smaller = more spread)
    quality_effect: float = 1.3  # logit change per unit of track quality (higher quality, fewer skips)
    off_genre_effect: float = 0.7  # logit added when a track is outside the session's home genre
    previous_skip_effect: float = 1.5  # logit added after a skipped track (persistence)
    shuffle_effect: float = 0.3  # logit added in shuffled sessions
    fwdbtn_effect: float = 0.3  # logit added when reason_start is fwdbtn
    clickrow_effect: float = -0.8  # ... clickrow (the user chose this track)
    backbtn_effect: float = -0.8  # ... backbtn (the user went back for it)
    skip_1_given_skip_2: float = 0.82  # P(skip_1 | skip_2)
    skip_3_given_not_skip_2: float = 0.27  # P(skip_3 | not skip_2)
    # output
    output_format: str = "csv"  # csv or parquet
    gzip: bool = False  # csv only: write log_*.csv.gz
    gzip_level: int = 6  # gzip compression level 1..9
    rows_per_file: int = 5_000_000  # a day with more rows is split over several files
    chunk_sessions: int = 50_000  # sessions generated at once (memory); part of the seed stream

    def validate(self) -> None:
        """Raise SynthError with a sentence naming the bad knob."""

        def bad(name: str, why: str) -> None:
            raise SynthError(f"SynthConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("sessions", "tracks", "days", "n_playlists", "tracks_per_genre", "successors_per_track",
                     "chunk_sessions", "rows_per_file"):
            if getattr(self, name) < 1:
                bad(name, "must be at least 1")
        if self.rows_per_file < MAX_SESSION_LENGTH:
            bad("rows_per_file", f"must be at least {MAX_SESSION_LENGTH} (one session)")
        if self.tracks < MAX_SESSION_LENGTH:
            bad("tracks", f"must be at least {MAX_SESSION_LENGTH}")
        if not MAX_SESSION_LENGTH <= self.playlist_length_min <= self.playlist_length_max:
            bad("playlist_length_min", f"need {MAX_SESSION_LENGTH} <= playlist_length_min <= playlist_length_max "
                f"({self.playlist_length_max}) so any session fits in a playlist")
        for name in ("playlist_share", "playlist_from_start", "markov_strength", "genre_stay", "shuffle_share",
                     "premium_share", "skip_1_given_skip_2", "skip_3_given_not_skip_2"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad(name, "must be a probability in [0, 1]")
        if self.markov_strength + self.genre_stay > 1.0:
            bad("genre_stay", f"markov_strength + genre_stay must be at most 1 (markov_strength={self.markov_strength})")
        if not 0.0 < self.skip_rate < 1.0:
            bad("skip_rate", "must be in (0, 1)")
        if self.skip_propensity_concentration <= 0:
            bad("skip_propensity_concentration", "must be positive")
        if self.output_format not in ("csv", "parquet"):
            bad("output_format", "must be 'csv' or 'parquet'")
        if self.gzip and self.output_format != "csv":
            bad("gzip", "gzip applies to csv output only; parquet files are compressed already")
        if not 1 <= self.gzip_level <= 9:
            bad("gzip_level", "must be in 1..9")
        try:
            date.fromisoformat(self.start_date)
        except ValueError:
            bad("start_date", "must be an ISO date like 2018-07-15")


# ---------------------------------------------------------------------------
# Small vectorised helpers
# ---------------------------------------------------------------------------


def _sample_rows(cum: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Draw one category per element from row `rows` of a cumulative table `cum` [R, K]."""
    k = cum.shape[1]
    return np.minimum((u[..., None] >= cum[rows]).sum(-1), k - 1)


def _cumulative(table) -> np.ndarray:
    t = np.asarray(table, dtype=np.float64)
    t = t / t.sum(-1, keepdims=True)
    return np.cumsum(t, -1)


def _uuid4_array(rng: np.random.Generator, n: int, prefix_text: str = "") -> pa.StringArray:
    """n random uuid4 strings as an Arrow array, each preceded by `prefix_text`."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    hexdigits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    nibbles = np.empty((n, 32), dtype=np.uint8)
    nibbles[:, 0::2] = hexdigits[raw >> 4]
    nibbles[:, 1::2] = hexdigits[raw & 0x0F]
    p = len(prefix_text)
    out = np.full((n, p + 36), ord("-"), dtype=np.uint8)
    if p:
        out[:, :p] = np.frombuffer(prefix_text.encode(), dtype=np.uint8)
    cols = [c for c in range(36) if c not in (8, 13, 18, 23)]
    out[:, p + np.array(cols)] = nibbles
    return _fixed_width_strings(out)


def _fixed_width_strings(chars: np.ndarray) -> pa.StringArray:
    """Rows of an ASCII byte matrix [n, w] as an Arrow string array, without Python objects."""
    n, w = chars.shape
    offsets = np.arange(0, (n + 1) * w, w, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars).tobytes()))


def _with_prefix(ids: pa.StringArray, prefix: str) -> pa.StringArray:
    """Prepend `prefix` to fixed-width ids (all the same length)."""
    n = len(ids)
    if n == 0:
        return ids
    width = len(ids[0].as_py())
    body = np.frombuffer(ids.buffers()[2], dtype=np.uint8)[: n * width].reshape(n, width)
    out = np.empty((n, len(prefix) + width), dtype=np.uint8)
    out[:, : len(prefix)] = np.frombuffer(prefix.encode(), dtype=np.uint8)
    out[:, len(prefix):] = body
    return _fixed_width_strings(out)


# ---------------------------------------------------------------------------
# The catalogue: tracks, genres, features, successors, playlists
# ---------------------------------------------------------------------------


@dataclass
class Catalog:
    """Everything fixed for a config: tracks, genres, playlists, skip intercept."""

    popularity: np.ndarray  # [V] weights, sum 1 (index = popularity rank)
    genre: np.ndarray  # [V] genre of each track
    quality: np.ndarray  # [V] latent quality ~ N(0, 1)
    genre_order: np.ndarray  # [V] track indices sorted by genre
    genre_cum: np.ndarray  # [V] cumulative popularity along genre_order
    genre_start: np.ndarray  # [G + 1] where each genre begins in genre_order
    genre_lo: np.ndarray  # [G] cumulative popularity before each genre
    genre_mass: np.ndarray  # [G] popularity mass of each genre
    global_cum: np.ndarray  # [V] cumulative popularity
    successors: np.ndarray  # [V, K] usual next tracks
    successor_cum: np.ndarray  # [K] cumulative successor weights
    playlists: np.ndarray  # [P, max_len] track indices (padded with -1)
    playlist_length: np.ndarray  # [P]
    playlist_genre: np.ndarray  # [P]
    playlist_cum: np.ndarray  # [P] cumulative playlist popularity
    track_ids: pa.StringArray  # [V] "t_<uuid4>"
    features: pa.Table  # the tf file
    intercept: float = 0.0  # calibrated skip logit intercept


def _popular_in_genre(cat: Catalog, genres: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A track drawn by popularity within each given genre."""
    target = cat.genre_lo[genres] + u * cat.genre_mass[genres]
    idx = np.searchsorted(cat.genre_cum, target, side="right")
    # float rounding at a genre's edge must not leave the genre
    idx = np.clip(idx, cat.genre_start[genres], cat.genre_start[genres + 1] - 1)
    return cat.genre_order[idx]


def _popular_anywhere(cat: Catalog, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cat.global_cum, u, side="right"), len(cat.global_cum) - 1)


def build_catalog(config: SynthConfig) -> Catalog:
    """Tracks, genres, features, successors and playlists for `config` (deterministic)."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, _STREAM_CATALOG]))
    V = config.tracks
    G = math.ceil(V / config.tracks_per_genre)
    weights = (np.arange(V) + 1.0) ** -config.zipf_exponent
    popularity = weights / weights.sum()
    genre = rng.integers(0, G, size=V)
    genre[:G] = np.arange(G)[: min(G, V)]  # every genre has at least one track
    quality = rng.standard_normal(V)

    genre_order = np.argsort(genre, kind="stable")
    genre_cum = np.cumsum(popularity[genre_order])
    genre_start = np.searchsorted(genre[genre_order], np.arange(G + 1))
    genre_end_cum = genre_cum[genre_start[1:] - 1]
    genre_lo = np.concatenate([[0.0], genre_end_cum[:-1]])
    genre_mass = genre_end_cum - genre_lo
    global_cum = np.cumsum(popularity)

    K = config.successors_per_track
    successor_weights = 0.5 ** np.arange(K)
    cat = Catalog(
        popularity=popularity, genre=genre, quality=quality, genre_order=genre_order, genre_cum=genre_cum,
        genre_start=genre_start, genre_lo=genre_lo, genre_mass=genre_mass, global_cum=global_cum,
        successors=np.zeros((V, K), dtype=np.int64), successor_cum=_cumulative(successor_weights),
        playlists=np.zeros((0, 0), dtype=np.int64), playlist_length=np.zeros(0, dtype=np.int64),
        playlist_genre=np.zeros(0, dtype=np.int64), playlist_cum=np.zeros(0), track_ids=pa.array([], pa.string()),
        features=pa.table({}),
    )
    successors = _popular_in_genre(cat, np.repeat(genre, K), rng.random(V * K)).reshape(V, K)
    for _ in range(3):  # a track is rarely its own successor (only in a tiny genre)
        own = successors == np.arange(V)[:, None]
        successors[own] = _popular_in_genre(cat, genre[np.nonzero(own)[0]], rng.random(int(own.sum())))
    cat.successors = successors

    # Playlists: ordered runs of distinct tracks from one genre, by popularity.
    P = config.n_playlists
    lengths = rng.integers(config.playlist_length_min, config.playlist_length_max + 1, size=P)
    pl_genre = _popular_genre(cat, rng.random(P))
    playlists = np.full((P, config.playlist_length_max), -1, dtype=np.int64)
    for p in range(P):
        members = np.flatnonzero(genre == pl_genre[p])
        pool = members if len(members) >= lengths[p] else np.arange(V)
        w = popularity[pool] / popularity[pool].sum()
        # distinct tracks, unless the whole catalogue is shorter than the playlist
        playlists[p, : lengths[p]] = rng.choice(pool, size=lengths[p], replace=len(pool) < lengths[p], p=w)
    pl_weights = (np.arange(P) + 1.0) ** -config.playlist_zipf_exponent
    cat.playlists, cat.playlist_length, cat.playlist_genre = playlists, lengths, pl_genre
    cat.playlist_cum = np.cumsum(pl_weights / pl_weights.sum())

    cat.track_ids = _uuid4_array(rng, V, prefix_text="t_")
    cat.features = _track_features(config, cat, rng)
    cat.intercept = _calibrate_intercept(config, cat)
    return cat


def _popular_genre(cat: Catalog, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(np.cumsum(cat.genre_mass), u, side="right"), len(cat.genre_mass) - 1)


def _track_features(config: SynthConfig, cat: Catalog, rng: np.random.Generator) -> pa.Table:
    """The 30 tf columns: genre centroid + noise, with quality showing through."""
    V, G = config.tracks, len(cat.genre_mass)
    g, q = cat.genre, cat.quality
    rank = np.arange(V) / max(V - 1, 1)

    def unit(center_sd: float, noise_sd: float, quality_loading: float = 0.0) -> np.ndarray:
        """A [0, 1] feature: sigmoid of a genre centre + noise (+ quality)."""
        centre = rng.normal(0.0, center_sd, size=G)
        z = centre[g] + rng.normal(0.0, noise_sd, size=V) + quality_loading * q
        return 1.0 / (1.0 + np.exp(-z))

    def around(lo: float, hi: float, spread: float) -> np.ndarray:
        centre = rng.uniform(lo, hi, size=G)
        return np.clip(centre[g] + rng.normal(0.0, spread, size=V), lo, hi)

    cols: dict[str, np.ndarray] = {}
    cols["duration"] = np.clip(rng.lognormal(np.log(215.0), 0.3, size=V), 30.0, 1800.0)
    era = rng.uniform(1965, 2016, size=G)
    cols["release_year"] = np.clip(np.round(era[g] + rng.normal(0, 6, size=V) + 4 * (1 - rank)), 1950, 2018)
    cols["us_popularity_estimate"] = np.clip(99.7 - 8.5 * rank ** 0.5 + 0.4 * q + rng.normal(0, 0.3, V), 90.0, 100.0)
    cols["acousticness"] = unit(1.5, 0.8)
    cols["beat_strength"] = unit(0.7, 0.5)
    cols["bounciness"] = unit(0.7, 0.5)
    cols["danceability"] = unit(0.6, 0.5, 0.5)
    cols["dyn_range_mean"] = around(4.0, 20.0, 1.5)
    cols["energy"] = unit(0.8, 0.5, 0.4)
    cols["flatness"] = around(0.87, 1.07, 0.02)
    cols["instrumentalness"] = unit(2.5, 1.5) ** 3
    cols["key"] = rng.integers(0, 12, size=V).astype(np.float64)
    cols["liveness"] = unit(0.5, 0.8) * 0.8
    cols["loudness"] = around(-15.0, -2.0, 1.5)
    cols["mechanism"] = unit(0.8, 0.5)
    cols["mode"] = np.where(rng.random(V) < 0.57, "major", "minor")
    cols["organism"] = unit(0.8, 0.5)
    cols["speechiness"] = unit(0.8, 0.6) * 0.5
    cols["tempo"] = around(70.0, 180.0, 10.0)
    cols["time_signature"] = rng.choice([3.0, 4.0, 5.0], size=V, p=[0.08, 0.88, 0.04])
    cols["valence"] = unit(0.8, 0.6, 0.5)
    for i in range(8):
        centre = rng.normal(0.0, 0.4, size=G)
        v = centre[g] + rng.normal(0.0, 0.15, size=V) + (0.3 * q if i == 7 else 0.0)
        cols[f"acoustic_vector_{i}"] = np.clip(v, -1.2, 1.2)

    arrays = {"track_id": cat.track_ids}
    for name in TRACK_FEATURE_COLUMNS:
        if name == "track_id":
            continue
        values = cols[name]
        if name == "mode":
            arrays[name] = pa.array(values, pa.string())
        else:
            arrays[name] = pa.array(np.round(values.astype(np.float64), 6), pa.float64())
    return pa.table(arrays)


# ---------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------


@dataclass
class Sessions:
    """One chunk of generated sessions; per-position arrays are [n, 20] (valid where position < length)."""

    length: np.ndarray  # [n]
    is_playlist: np.ndarray  # [n] bool
    tracks: np.ndarray  # [n, 20] track indices
    home_genre: np.ndarray  # [n]
    shuffle: np.ndarray  # [n] bool
    premium: np.ndarray  # [n] bool
    hour: np.ndarray  # [n]
    context_type: np.ndarray  # [n] index into CONTEXT_TYPES
    static_logit: np.ndarray  # [n, 20] skip logit terms that do not depend on earlier skips
    uniforms: np.ndarray  # [4, n, 20] the skip chain's random numbers


_LENGTH_CUM = _cumulative([LENGTH_COUNTS])
_HOUR_CUM = _cumulative([HOUR_COUNTS])
_CONTEXT_CUM = _cumulative([CONTEXT_MIX_DRIFT, CONTEXT_MIX_PLAYLIST])
_FIRST_RS_CUM = _cumulative([FIRST_REASON_START_MIX])
_NEXT_RS_CUM = _cumulative(NEXT_REASON_START)
_REASON_END_CUM = _cumulative(REASON_END_GIVEN_LEVEL)
_LONG_PAUSE = np.asarray(LONG_PAUSE_GIVEN_REASON_START)


def _draw_sessions(config: SynthConfig, cat: Catalog, rng: np.random.Generator, n: int) -> Sessions:
    """Session-level draws, track sequences and static skip logits for n sessions."""
    T = MAX_SESSION_LENGTH
    length = MIN_SESSION_LENGTH + _sample_rows(_LENGTH_CUM, np.zeros(n, dtype=np.int64), rng.random(n))
    is_playlist = rng.random(n) < config.playlist_share

    # Drift sessions: successor chain / home genre / anywhere.
    home = _popular_genre(cat, rng.random(n))
    tracks = np.empty((n, T), dtype=np.int64)
    tracks[:, 0] = _popular_in_genre(cat, home, rng.random(n))
    for t in range(1, T):
        u = rng.random(n)
        follow = _sample_rows(cat.successor_cum[None, :], np.zeros(n, dtype=np.int64), rng.random(n))
        nxt = cat.successors[tracks[:, t - 1], follow]
        stay = _popular_in_genre(cat, home, rng.random(n))
        anywhere = _popular_anywhere(cat, rng.random(n))
        tracks[:, t] = np.where(u < config.markov_strength, nxt,
                                np.where(u < config.markov_strength + config.genre_stay, stay, anywhere))

    # Playlist sessions: a contiguous run of one playlist.
    pl = np.minimum(np.searchsorted(cat.playlist_cum, rng.random(n), side="right"), len(cat.playlist_cum) - 1)
    room = cat.playlist_length[pl] - length  # >= 0 since playlists have >= 20 tracks
    offset = np.where(rng.random(n) < config.playlist_from_start, 0, np.floor(rng.random(n) * (room + 1)).astype(np.int64))
    positions = np.minimum(offset[:, None] + np.arange(T)[None, :], cat.playlist_length[pl][:, None] - 1)
    pl_tracks = cat.playlists[pl[:, None], positions]
    tracks = np.where(is_playlist[:, None], pl_tracks, tracks)
    home = np.where(is_playlist, cat.playlist_genre[pl], home)

    shuffle = ~is_playlist & (rng.random(n) < config.shuffle_share)
    premium = rng.random(n) < config.premium_share
    hour = _sample_rows(_HOUR_CUM, np.zeros(n, dtype=np.int64), rng.random(n))
    context_type = _sample_rows(_CONTEXT_CUM, is_playlist.astype(np.int64), rng.random(n))

    a = config.skip_rate * config.skip_propensity_concentration
    b = (1.0 - config.skip_rate) * config.skip_propensity_concentration
    propensity = np.clip(rng.beta(a, b, size=n), 1e-3, 1 - 1e-3)
    static_logit = (
        np.log(propensity / (1 - propensity))[:, None]
        - config.quality_effect * cat.quality[tracks]
        + config.off_genre_effect * (cat.genre[tracks] != home[:, None])
        + config.shuffle_effect * shuffle[:, None]
    )
    uniforms = rng.random((4, n, T))
    return Sessions(length, is_playlist, tracks, home, shuffle, premium, hour, context_type, static_logit, uniforms)


def _skip_chain(config: SynthConfig, s: Sessions, intercept: float):
    """Walk the positions: reason_start -> skip_2 -> skip level -> reason_end -> next reason_start.

    Returns (reason_start, skip level, reason_end), each [n, 20].
    """
    n, T = s.tracks.shape
    u_start, u_skip, u_level, u_end = s.uniforms
    rs_effect = np.zeros(len(REASON_START))
    rs_effect[RS_FWDBTN] = config.fwdbtn_effect
    rs_effect[RS_CLICKROW] = config.clickrow_effect
    rs_effect[RS_BACKBTN] = config.backbtn_effect
    reason_start = np.empty((n, T), dtype=np.int64)
    level = np.empty((n, T), dtype=np.int64)
    reason_end = np.empty((n, T), dtype=np.int64)
    previous_skip = np.zeros(n)
    p_ns = config.skip_3_given_not_skip_2 + (1 - config.skip_3_given_not_skip_2) * NOT_SKIPPED_GIVEN_NOT_SKIP_3
    for t in range(T):
        if t == 0:
            rs = _sample_rows(_FIRST_RS_CUM, np.zeros(n, dtype=np.int64), u_start[:, 0])
        else:
            rs = _sample_rows(_NEXT_RS_CUM, reason_end[:, t - 1], u_start[:, t])
        logit = intercept + s.static_logit[:, t] + rs_effect[rs] + config.previous_skip_effect * previous_skip
        skip_2 = u_skip[:, t] < 1.0 / (1.0 + np.exp(-logit))
        lv = np.where(
            skip_2,
            np.where(u_level[:, t] < config.skip_1_given_skip_2, LEVEL_SKIP_1, LEVEL_SKIP_2),
            np.where(u_level[:, t] < config.skip_3_given_not_skip_2, LEVEL_SKIP_3,
                     np.where(u_level[:, t] < p_ns, LEVEL_NOT_SKIPPED, LEVEL_NONE)),
        )
        reason_start[:, t] = rs
        level[:, t] = lv
        reason_end[:, t] = _sample_rows(_REASON_END_CUM, lv, u_end[:, t])
        previous_skip = skip_2.astype(np.float64)
    return reason_start, level, reason_end


def _calibrate_intercept(config: SynthConfig, cat: Catalog) -> float:
    """The intercept that makes the overall skip_2 rate `skip_rate`.

    Bisection on a calibration sample of sessions (its own seed stream, the
    same random numbers at every step, so the rate is monotone in the
    intercept), finished by linear interpolation inside the last bracket.
    """
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, _STREAM_CALIBRATION]))
    s = _draw_sessions(config, cat, rng, _CALIBRATION_SESSIONS)
    valid = np.arange(MAX_SESSION_LENGTH)[None, :] < s.length[:, None]

    def rate(intercept: float) -> float:
        _, level, _ = _skip_chain(config, s, intercept)
        return float((level[valid] <= LEVEL_SKIP_2).mean())

    (lo, rate_lo), (hi, rate_hi) = (-6.0, 0.0), (6.0, 1.0)
    for _ in range(8):  # bracket 0.05 wide in logit
        mid = 0.5 * (lo + hi)
        rate_mid = rate(mid)
        if rate_mid > config.skip_rate:
            hi, rate_hi = mid, rate_mid
        else:
            lo, rate_lo = mid, rate_mid
    share = (config.skip_rate - rate_lo) / max(rate_hi - rate_lo, 1e-12)
    return round(lo + min(max(share, 0.0), 1.0) * (hi - lo), 6)


def _session_rows(config: SynthConfig, cat: Catalog, rng: np.random.Generator, n: int):
    """n sessions as a dict of flat row arrays (session-major, position order) plus per-session facts."""
    s = _draw_sessions(config, cat, rng, n)
    reason_start, level, reason_end = _skip_chain(config, s, cat.intercept)
    T = MAX_SESSION_LENGTH
    position = np.broadcast_to(np.arange(T), (n, T))
    valid = position < s.length[:, None]
    rows = int(valid.sum())
    session_of_row = np.repeat(np.arange(n), s.length)

    rs = reason_start[valid]
    lv = level[valid]
    u = rng.random((5, rows))
    long_pause = u[0] < _LONG_PAUSE[rs]
    short_pause = long_pause & (u[1] < SHORT_GIVEN_LONG_PAUSE)
    no_pause = ~long_pause & (u[2] < NO_PAUSE_GIVEN_NOT_LONG)
    pos = position[valid]
    context_switch = (pos > 0) & (((rs == RS_CLICKROW) & (u[3] < CONTEXT_SWITCH_GIVEN_CLICKROW))
                                  | ((rs == RS_APPLOAD) & (u[3] < CONTEXT_SWITCH_GIVEN_APPLOAD)))
    seek_fwd = np.where(u[4] < SEEK_FWD_SHARE, rng.geometric(0.65, rows), 0)
    seek_back = np.where(rng.random(rows) < SEEK_BACK_SHARE, rng.geometric(0.65, rows), 0)

    columns = {
        "session_position": (pos + 1).astype(np.int32),
        "session_length": s.length[session_of_row].astype(np.int32),
        "track_index": s.tracks[valid],
        "skip_1": lv == LEVEL_SKIP_1,
        "skip_2": lv <= LEVEL_SKIP_2,
        "skip_3": lv <= LEVEL_SKIP_3,
        "not_skipped": lv == LEVEL_NOT_SKIPPED,
        "context_switch": context_switch.astype(np.int8),
        "no_pause_before_play": no_pause.astype(np.int8),
        "short_pause_before_play": short_pause.astype(np.int8),
        "long_pause_before_play": long_pause.astype(np.int8),
        "hist_user_behavior_n_seekfwd": seek_fwd.astype(np.int16),
        "hist_user_behavior_n_seekback": seek_back.astype(np.int16),
        "hist_user_behavior_is_shuffle": s.shuffle[session_of_row],
        "hour_of_day": s.hour[session_of_row].astype(np.int8),
        "premium": s.premium[session_of_row],
        "context_type": s.context_type[session_of_row],
        "hist_user_behavior_reason_start": rs,
        "hist_user_behavior_reason_end": reason_end[valid],
    }
    return s, columns


_CATEGORY_ARRAYS = {
    "context_type": pa.array(CONTEXT_TYPES),
    "hist_user_behavior_reason_start": pa.array(REASON_START),
    "hist_user_behavior_reason_end": pa.array(REASON_END),
}


def _log_table(cat: Catalog, columns: dict, session_ids: pa.StringArray, lengths: np.ndarray,
               day_text: str, row_lo: int, row_hi: int) -> pa.Table:
    """Rows [row_lo, row_hi) of a chunk as an Arrow table with the 21 log columns, in schema order."""
    rows = row_hi - row_lo
    arrays = {}
    for name, dtype in LOG_COLUMNS.items():
        if name == "session_id":
            arrays[name] = session_ids.take(pa.array(np.repeat(np.arange(len(lengths)), lengths)))
        elif name == "track_id_clean":
            arrays[name] = cat.track_ids.take(pa.array(columns["track_index"][row_lo:row_hi]))
        elif name == "date":
            arrays[name] = pa.array([day_text], pa.string()).take(pa.array(np.zeros(rows, dtype=np.int32)))
        elif name in _CATEGORY_ARRAYS:
            arrays[name] = _CATEGORY_ARRAYS[name].take(pa.array(columns[name][row_lo:row_hi]))
        else:
            arrays[name] = pa.array(columns[name][row_lo:row_hi], dtype)
    return pa.table(arrays)


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


class _LogFile:
    """One open output log file (csv, csv.gz or parquet)."""

    def __init__(self, path: Path, config: SynthConfig):
        self.path, self.config, self.rows = path, config, 0
        if config.output_format == "parquet":
            self._writer = pq.ParquetWriter(path, pa.schema(list(LOG_COLUMNS.items())))
        else:
            self._raw = open(path, "wb")
            self._stream = (gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0,
                                          compresslevel=config.gzip_level) if config.gzip else self._raw)

    def write(self, table: pa.Table) -> None:
        if self.config.output_format == "parquet":
            self._writer.write_table(table)
        else:
            if self.rows == 0:  # Arrow would quote the header's names; MSSD's header is bare
                self._stream.write((",".join(table.column_names) + "\n").encode())
            pacsv.write_csv(table, self._stream, pacsv.WriteOptions(include_header=False, quoting_style="none"))
        self.rows += table.num_rows

    def close(self) -> None:
        if self.config.output_format == "parquet":
            self._writer.close()
        else:
            if self._stream is not self._raw:
                self._stream.close()
            self._raw.close()


def _write_csv(table: pa.Table, path: Path) -> None:
    """A whole table as MSSD-style CSV: bare header, no quoting."""
    with open(path, "wb") as f:
        f.write((",".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, f, pacsv.WriteOptions(include_header=False, quoting_style="none"))


def _log_name(index: int, day: date, config: SynthConfig) -> str:
    if config.output_format == "parquet":
        return f"log_{index}_{day:%Y%m%d}.parquet"
    return f"log_{index}_{day:%Y%m%d}_000000000000.csv" + (".gz" if config.gzip else "")


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(p for p in out_dir.iterdir() if p.name.startswith(("log_", "tf_")))
    if existing and not overwrite:
        raise SynthError(
            f"{out_dir} already holds MSSD files ({existing[0].name}, ... {len(existing)} in all). "
            "Choose an empty directory or pass overwrite=True (--overwrite) to replace them."
        )
    for p in existing:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def generate(config: SynthConfig, out_dir, *, overwrite: bool = False, show_progress: bool = False) -> dict:
    """Write a synthetic MSSD raw directory for `config` into `out_dir`; return a summary.

    Summary keys: rows, sessions, files (log file names, in order), track_file,
    tracks, skip_rate (skip_2 over rows), playlist_share (over sessions),
    length_histogram ({10: sessions, ..., 20: sessions}), seconds, rows_per_s,
    intercept (the calibrated skip logit intercept), config (the knobs).
    """
    config.validate()
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    cat = build_catalog(config)
    _write_csv(cat.features, out_dir / "tf_000000000000.csv")

    progress = None
    if show_progress:
        from tqdm import tqdm

        progress = tqdm(total=config.sessions, unit="session", unit_scale=True, desc="synth", file=sys.stderr)

    start = date.fromisoformat(config.start_date)
    files: list[str] = []
    rows_total = skip_total = playlist_total = 0
    length_hist = np.zeros(MAX_SESSION_LENGTH + 1, dtype=np.int64)
    file_index = 0
    for d in range(config.days):
        day = start + timedelta(days=d)
        day_text = day.isoformat()
        n_day = config.sessions * (d + 1) // config.days - config.sessions * d // config.days
        current: _LogFile | None = None
        for c, lo in enumerate(range(0, n_day, config.chunk_sessions)):
            n = min(config.chunk_sessions, n_day - lo)
            rng = np.random.default_rng(np.random.SeedSequence([config.seed, _STREAM_SESSIONS, d, c]))
            s, columns = _session_rows(config, cat, rng, n)
            uuids = _uuid4_array(rng, n)
            row_end = np.cumsum(s.length)
            row_start = row_end - s.length
            first = 0  # first session of the chunk not yet written
            while first < n:
                if current is None:
                    current = _LogFile(out_dir / _log_name(file_index, day, config), config)
                    files.append(current.path.name)
                room = config.rows_per_file - current.rows
                # sessions that fit in the current file
                last = int(np.searchsorted(row_end, row_start[first] + room, side="right"))
                if last == first:  # the file is full
                    current.close()
                    current, file_index = None, file_index + 1
                    continue
                ids = _with_prefix(uuids.slice(first, last - first), f"{file_index}_")
                current.write(_log_table(cat, columns, ids, s.length[first:last], day_text,
                                         int(row_start[first]), int(row_end[last - 1])))
                first = last
            rows_total += int(row_end[-1])
            skip_total += int(columns["skip_2"].sum())
            playlist_total += int(s.is_playlist.sum())
            length_hist += np.bincount(s.length, minlength=MAX_SESSION_LENGTH + 1)
            if progress is not None:
                progress.update(n)
        if current is not None:
            current.close()
            file_index += 1
    if progress is not None:
        progress.close()
    seconds = time.perf_counter() - t0
    return {
        "rows": rows_total,
        "sessions": config.sessions,
        "files": files,
        "track_file": "tf_000000000000.csv",
        "tracks": config.tracks,
        "skip_rate": skip_total / max(rows_total, 1),
        "playlist_share": playlist_total / max(config.sessions, 1),
        "length_histogram": {L: int(length_hist[L]) for L in range(MIN_SESSION_LENGTH, MAX_SESSION_LENGTH + 1)},
        "seconds": seconds,
        "rows_per_s": rows_total / max(seconds, 1e-9),
        "intercept": cat.intercept,
        "config": asdict(config),
    }


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> tuple[SynthConfig, Path, bool, bool]:
    defaults = SynthConfig()
    parser = argparse.ArgumentParser(
        prog="python -m data_pipeline.synth",
        description="Write a synthetic MSSD raw directory (log_*.csv[.gz] or parquet per day, tf_000000000000.csv) "
        "with learnable structure: Zipf track popularity, curated playlist sessions, genre drift, "
        "per-session skip propensity, skips depending on track quality, interactions and previous skips.",
    )
    parser.add_argument("--sessions", type=int, default=defaults.sessions, help="sessions in all (default %(default)s)")
    parser.add_argument("--tracks", type=int, default=defaults.tracks, help="tracks in the catalogue (default %(default)s)")
    parser.add_argument("--days", type=int, default=defaults.days, help="days, one log file each (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    parser.add_argument("--gzip", action="store_true", help="write log_*.csv.gz")
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv", dest="output_format",
                        help="log file format (default csv; parquet is faster for large runs)")
    parser.add_argument("--start-date", default=defaults.start_date, help="ISO date of day 0 (default %(default)s)")
    parser.add_argument("--playlist-share", type=float, default=defaults.playlist_share,
                        help="share of playlist sessions (default %(default)s)")
    parser.add_argument("--skip-rate", type=float, default=defaults.skip_rate,
                        help="overall skip_2 rate (default %(default)s)")
    parser.add_argument("--rows-per-file", type=int, default=defaults.rows_per_file,
                        help="split a day into several files beyond this many rows (default %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                        help="any other SynthConfig knob, e.g. --set zipf_exponent=1.2 (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="replace log_*/tf_* files already in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    knobs = {f.name: f for f in fields(SynthConfig)}
    values = {k: getattr(args, k) for k in ("sessions", "tracks", "days", "seed", "output_format", "start_date",
                                            "playlist_share", "skip_rate", "rows_per_file")}
    values["gzip"] = args.gzip
    for item in args.set:
        name, sep, text = item.partition("=")
        if not sep or name not in knobs:
            parser.error(f"--set {item!r}: expected KNOB=VALUE with KNOB one of {', '.join(knobs)}")
        kind = type(getattr(defaults, name))
        try:
            values[name] = (text.lower() in ("1", "true", "yes")) if kind is bool else kind(text)
        except ValueError:
            parser.error(f"--set {item!r}: {text!r} is not a valid {kind.__name__}")
    config = SynthConfig(**values)
    try:
        config.validate()
    except SynthError as e:
        parser.error(str(e))
    return config, args.out, args.overwrite, not args.quiet


def main(argv: list[str] | None = None) -> int:
    config, out, overwrite, show_progress = _parse_args(argv)
    try:
        summary = generate(config, out, overwrite=overwrite, show_progress=show_progress)
    except SynthError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    hist = " ".join(f"{k}:{v}" for k, v in summary["length_histogram"].items())
    print(
        f"synth: wrote {summary['rows']:,} rows, {summary['sessions']:,} sessions, {summary['tracks']:,} tracks "
        f"in {len(summary['files'])} log file(s) + {summary['track_file']} to {out} | "
        f"skip_2 rate {summary['skip_rate']:.3f}, playlist share {summary['playlist_share']:.3f} | "
        f"lengths {hist} | {summary['seconds']:.1f} s ({summary['rows_per_s']:,.0f} rows/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
