"""Accounting for every input row and session: the totals the driver adds up, and ``manifest.json``.

Each staged block reports a ``sessions.BlockCounts``; ``Totals`` adds them up
(and subtracts the counts of sessions dropped afterwards, such as an id
complete in two files). ``build_manifest`` checks the books before anything
is written: rows read = rows kept + rows dropped (by reason), and sessions
read = kept + dropped; a mismatch is a bug, never a silent loss. Examples of
dropped sessions are the first ones in file and line order, so a run gives
the same manifest however Ray schedules its blocks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_pipeline.schema import CATEGORICAL_SEQUENCE_COLUMNS, FIRST_TRACK_ID, FORMAT_VERSION, SPLITS
from data_pipeline.sessions import (
    DROP_REASONS,
    EXAMPLES_PER_REASON,
    PLAYS_SCHEMA,
    BlockCounts,
    MergeResult,
    combine_plays,
    empty_staged,
)

# The plays table is re-aggregated past this many rows, so the driver's memory follows the distinct tracks.
PLAYS_ROWS_BEFORE_COMBINING = 4_000_000


@dataclass
class Totals:
    """The run's counts, added up block by block on the driver."""

    rows: int = 0
    kept_hashes: list = field(default_factory=list)
    kept_lengths: list = field(default_factory=list)
    kept_splits: list = field(default_factory=list)
    reordered: int = 0
    plays: list = field(default_factory=list)
    plays_rows: int = 0
    categories: dict = field(default_factory=lambda: {name: Counter() for name in CATEGORICAL_SEQUENCE_COLUMNS})
    dropped: dict = field(default_factory=dict)  # reason -> {"sessions", "rows"}
    examples: dict = field(default_factory=dict)  # reason -> [(file, line, session_id, files)]
    fragments: list = field(default_factory=list)

    def add(self, counts: BlockCounts) -> None:
        self.rows += counts.rows
        self.kept_hashes.append(counts.kept_hashes)
        self.kept_lengths.append(counts.kept_lengths)
        self.kept_splits.append(counts.kept_splits)
        self.reordered += counts.reordered
        if counts.fragments is not None and counts.fragments.num_rows:
            self.fragments.append(counts.fragments)
        self._add_values(counts, 1)
        self.add_drops(counts.dropped, counts.examples)

    def subtract(self, counts: BlockCounts) -> None:
        """Take sessions back out of the plays and values (their drop is counted with add_drops)."""
        self._add_values(counts, -1)

    def _add_values(self, counts: BlockCounts, sign: int) -> None:
        if counts.plays is not None:
            plays = counts.plays
            if sign < 0:
                plays = pa.table([plays.column(0), *[pc.negate(c) for c in plays.columns[1:]]], schema=PLAYS_SCHEMA)
            self.plays.append(plays)
            self.plays_rows += plays.num_rows
            if self.plays_rows > PLAYS_ROWS_BEFORE_COMBINING:
                self.plays = [self.combined_plays()]
                self.plays_rows = self.plays[0].num_rows
        for name, values in counts.categories.items():
            for value, count in values.items():
                self.categories[name][value] += sign * count

    def add_drops(self, dropped: dict, examples: dict) -> None:
        for reason, entry in dropped.items():
            total = self.dropped.setdefault(reason, {"sessions": 0, "rows": 0})
            total["sessions"] += entry["sessions"]
            total["rows"] += entry["rows"]
            kept = self.examples.setdefault(reason, [])
            kept.extend(examples.get(reason, []))
            kept.sort(key=lambda example: example[:2])
            del kept[EXAMPLES_PER_REASON:]

    def combined_plays(self) -> pa.Table:
        """``sessions.PLAYS_SCHEMA``: plays of kept sessions per track (one row each) and split."""
        return combine_plays(self.plays)

    def kept(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hashes, lengths and splits of every session kept by a block (before duplicates are taken out)."""
        def joined(parts: list, dtype) -> np.ndarray:
            return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)

        return joined(self.kept_hashes, np.uint64), joined(self.kept_lengths, np.int64), joined(self.kept_splits, np.int8)

    def all_fragments(self) -> pa.Table:
        return pa.concat_tables(self.fragments) if self.fragments else empty_staged()


def examples_as_files(examples: list, paths: list[str]) -> list[dict]:
    """(file, line, session_id, [file, ...]) tuples -> the manifest's {"session_id", "files"} entries."""
    return [{"session_id": session_id, "files": [paths[f] for f in files]} for _, _, session_id, files in examples]


@dataclass
class Books:
    """What the manifest reports about rows and sessions, checked to add up."""

    rows_read: int
    sessions_read: int
    kept_sessions: int
    kept_rows: int
    dropped_rows: dict
    dropped_sessions: dict

    @classmethod
    def close(cls, totals: Totals, sessions_read: int, keep: np.ndarray, lengths: np.ndarray) -> "Books":
        books = cls(
            rows_read=totals.rows,
            sessions_read=sessions_read,
            kept_sessions=int(keep.sum()),
            kept_rows=int(lengths[keep].sum()),
            dropped_rows={r: totals.dropped[r]["rows"] for r in DROP_REASONS if r in totals.dropped},
            dropped_sessions={r: totals.dropped[r]["sessions"] for r in DROP_REASONS
                              if r in totals.dropped and r != "missing_session_id"},
        )
        if (books.kept_rows + sum(books.dropped_rows.values()) != books.rows_read
                or books.kept_sessions + sum(books.dropped_sessions.values()) != books.sessions_read):
            raise RuntimeError(
                f"internal accounting error: rows read {books.rows_read}, kept {books.kept_rows}, dropped "
                f"{books.dropped_rows}; sessions read {books.sessions_read}, kept {books.kept_sessions}, "
                f"dropped {books.dropped_sessions}"
            )
        return books


def split_entries(plays: pa.Table, vocab_ids: pa.Array, keep: np.ndarray, splits: np.ndarray, lengths: np.ndarray,
                  shard_files: dict[str, int]) -> dict:
    """Per split: sessions, rows, shard files, distinct tracks and plays outside the vocabulary."""
    entries = {}
    outside = ~pc.is_in(plays.column("track_id"), value_set=vocab_ids.slice(FIRST_TRACK_ID)).to_numpy(zero_copy_only=False)
    for index, name in enumerate(SPLITS):
        mine = keep & (splits == index)
        counts = plays.column(name).to_numpy()
        entries[name] = {
            "sessions": int(mine.sum()),
            "rows": int(lengths[mine].sum()),
            "files": shard_files.get(name, 0),
            "tracks_seen": int((counts > 0).sum()),
            "unk_plays": int(counts[outside].sum()),
        }
    return entries


def vocabulary_entry(plays: pa.Table, vocab_ids: pa.Array, rule: dict, splits: dict) -> dict:
    return {
        "size": len(vocab_ids),
        **rule,
        "tracks": len(vocab_ids) - FIRST_TRACK_ID,
        "tracks_seen": splits["train"]["tracks_seen"],
        "tracks_seen_all_splits": plays.num_rows,
        "unk_plays": sum(s["unk_plays"] for s in splits.values()),
        "unk_plays_train": splits["train"]["unk_plays"],
    }


def build_manifest(*, fingerprint: str, options: dict, inputs: dict, books: Books, totals: Totals, merge: MergeResult,
                   log_paths: list[str], splits: dict, vocab: dict, unseen_categories: dict, track_features: dict,
                   timing: dict) -> dict:
    """manifest.json: options, inputs, rows and sessions by fate, splits, vocabulary, categories, features, timing."""
    return {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "options": options,
        "inputs": inputs,
        "rows": {"read": books.rows_read, "kept": books.kept_rows, "dropped": books.dropped_rows},
        "sessions": {
            "read": books.sessions_read,
            "kept": books.kept_sessions,
            "dropped": books.dropped_sessions,
            "dropped_examples": {reason: examples_as_files(examples, log_paths)
                                 for reason, examples in totals.examples.items()},
            "reordered": totals.reordered,
            "merged_from_fragments": merge.merged.num_rows,
            "split_across_files": merge.split_across_files,
            "split_across_files_examples": examples_as_files(merge.split_across_files_examples, log_paths),
        },
        "splits": splits,
        "vocab": vocab,
        "categories": {"unseen_values": unseen_categories},
        "track_features": track_features,
        "timing": timing,
    }


def summary_table(manifest: dict) -> str:
    """The end-of-run table: splits, drops by reason, vocabulary and features."""
    lines = ["", "| split | sessions | rows | unk plays | shards |", "|---|---:|---:|---:|---:|"]
    for name, info in manifest["splits"].items():
        lines.append(f"| {name} | {info['sessions']:,} | {info['rows']:,} | {info['unk_plays']:,} | {info['files']} |")
    rows, sessions = manifest["rows"], manifest["sessions"]
    lines.append(f"| **read** | {sessions['read']:,} | {rows['read']:,} | | |")
    for reason, n in rows["dropped"].items():
        lines.append(f"| dropped: {reason} | {sessions['dropped'].get(reason, 0):,} | {n:,} | | |")
    vocab, features = manifest["vocab"], manifest["track_features"]
    rule = f"min count {vocab['min_count']}" if "min_count" in vocab else f"top {vocab['top_k']:,}"
    lines.append("")
    lines.append(
        f"vocabulary: {vocab['size']:,} ids ({vocab['tracks']:,} of {vocab['tracks_seen']:,} training tracks, {rule}); "
        f"track features: {features['tracks_with_features']:,} with a row, {features['missing']:,} missing; "
        f"sessions merged across blocks/files: {sessions['merged_from_fragments']:,} "
        f"({sessions['split_across_files']:,} across files); {manifest['timing']['total_s']:.1f} s"
    )
    return "\n".join(lines)
