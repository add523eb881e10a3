"""Turn raw MSSD files into a prepared dataset, on Ray Data.

    python -m data_pipeline.prepare --raw DIR --out DIR [--min-count N | --top-k K]
        [--val-fraction F] [--test-fraction F | --test-dates D [D ...]] [--address ADDR]

Runs on a local Ray instance (all cores) or on a cluster (``--address`` or
``RAY_ADDRESS``; the raw and output folders must then be on storage every node
sees). The steps:

1. read every ``log_*`` file (CSV, gzipped CSV or parquet; booleans as
   true/false or True/False) with the column types of ``schema.LOG_COLUMNS``,
   and turn each block of rows into sessions (``sessions.sessionize_block``):
   one pass over the raw data, kept in Ray's object store;
2. add up per-block counts on the driver: plays per track on the training
   split -> vocabulary (ids 0..3 reserved, then tracks by play count, ties by
   track id), categorical values, drops by reason; sessions cut by block or
   file boundaries are merged here (``sessions.merge_fragments``);
3. encode every kept session (vocabulary ids, category codes) and write
   parquet shards per split; then ``vocab.parquet``, ``track_features.npy``,
   ``categories.json`` and ``manifest.json``.

Splits are deterministic: by a 64-bit blake2b hash of session_id (default 10%
val, 10% test), or test = sessions dated ``--test-dates`` (val by hash among the
rest). A session's date is the date of its first position.

Vocabulary size: by default every track played at least once in the training
split (``--min-count 1``), so nothing seen in training is lost; the paper kept
tracks played at least 150 times (``--min-count 150``, about 103K tracks on
the full MSSD; ``--top-k 103000`` is the equivalent cap). Tracks outside the
vocabulary become ``<unk>`` (id 3) and are counted in the manifest.

The output directory is written next to its final place and renamed into it at
the end, so a crashed run never leaves a half-written dataset behind.
Errors about the input name the file, line or session and say what to do; the
CLI prints them as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import shutil
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_pipeline import readers
from data_pipeline.ray_runtime import init_ray
from data_pipeline.schema import (
    CATEGORICAL_SEQUENCE_COLUMNS,
    CATEGORICAL_VALUES,
    FIRST_TRACK_ID,
    FORMAT_VERSION,
    MODE_VALUES,
    PREPARED_FILES,
    RESERVED_TOKENS,
    SPLITS,
    TRACK_FEATURE_COLUMNS,
    TRACK_FEATURE_NAMES,
    UNKNOWN_CATEGORY,
    SchemaError,
)
from data_pipeline.sessions import (
    DROP_REASONS,
    EXAMPLES_PER_REASON,
    SplitRule,
    empty_staged,
    encode_block,
    merge_fragments,
    sessionize_block,
    summarize_block,
)

DEFAULT_MIN_COUNT = 1
# zstd level 1 without dictionary pages: faster to write and to read back than
# the snappy + dictionary default, at about the same size.
SHARD_WRITE_OPTIONS = {"compression": "zstd", "compression_level": 1, "use_dictionary": ["date"]}
MAX_CATEGORY_CODES = 127  # codes are int8


@dataclass
class PrepareOptions:
    """What to prepare and how. `min_count` and `top_k` are exclusive (default: min_count 1)."""

    raw: str | Path
    out: str | Path
    min_count: int | None = None
    top_k: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    test_dates: list[str] | tuple[str, ...] | None = None
    fold: int = 0  # rotate the hash split (see SplitRule): folds 0..1/test_fraction-1 are cross-validation
    show_progress: bool = True
    address: str | None = None  # Ray cluster address; None: RAY_ADDRESS or a local instance

    def validate(self) -> None:
        # Cloud URIs: prepare reads and writes local or shared paths only (readers, atomic rename of the output).
        if isinstance(self.raw, str) and "://" in self.raw:
            raise SchemaError(
                f"--raw {self.raw}: prepare reads from a local or shared path; copy the raw files down first "
                "(`aws s3 sync URI DIR` / `gsutil -m rsync -r URI DIR`)."
            )
        if isinstance(self.out, str) and "://" in self.out:
            raise SchemaError(
                f"--out {self.out}: prepare writes to a local or shared path; copy the result with "
                f"`aws s3 sync DIR {self.out}` / `gsutil -m rsync -r DIR {self.out}` "
                "and give that URI to `tuning.search --data`."
            )
        if self.min_count is not None and self.top_k is not None:
            raise SchemaError("give either --min-count or --top-k, not both.")
        if self.min_count is not None and self.min_count < 1:
            raise SchemaError(f"--min-count must be at least 1 (got {self.min_count}).")
        if self.top_k is not None and self.top_k < 1:
            raise SchemaError(f"--top-k must be at least 1 (got {self.top_k}).")
        test = 0.0 if self.test_dates else self.test_fraction
        for name, value in (("--val-fraction", self.val_fraction), ("--test-fraction", test)):
            if not 0.0 <= value < 1.0:
                raise SchemaError(f"{name} must be in [0, 1) (got {value}).")
        step = self.val_fraction if self.test_dates else self.test_fraction
        if self.fold < 0 or (self.fold and self.fold * step >= 1.0 - 1e-9):
            last = int((1.0 - 1e-9) / step) if step > 0 else 0
            raise SchemaError(
                f"--fold {self.fold}: folds run from 0 to {last} when each fold moves the held-out slice by "
                f"{step:g} (the {'val' if self.test_dates else 'test'} fraction)."
            )
        if self.val_fraction + test >= 1.0:
            raise SchemaError(
                f"--val-fraction + --test-fraction must be below 1 (got {self.val_fraction + test}): "
                "nothing would be left to train on."
            )

    def split_rule(self) -> SplitRule:
        return SplitRule(self.val_fraction, self.test_fraction, tuple(self.test_dates or ()), self.fold)

    def vocabulary_rule(self) -> dict:
        if self.top_k is not None:
            return {"top_k": self.top_k}
        return {"min_count": self.min_count if self.min_count is not None else DEFAULT_MIN_COUNT}


# ---------------------------------------------------------------------------
# Ray
# ---------------------------------------------------------------------------


def _read_logs(files: readers.RawFiles):
    """The log files as a Ray Dataset of raw rows plus ``path``.

    One block per file (more when a file exceeds Ray's target block size, or
    when there are fewer files than CPUs, so every CPU gets work): sessions
    cut at a block boundary become fragments, merged on the driver.
    """
    import ray
    import ray.data

    paths = [str(p) for p in files.logs]
    blocks = max(len(paths), int(ray.cluster_resources().get("CPU", 1)))
    if files.log_format == "parquet":
        return ray.data.read_parquet(paths, include_paths=True, override_num_blocks=blocks)
    return ray.data.read_csv(
        paths,
        include_paths=True,
        override_num_blocks=blocks,
        read_options=readers.csv_read_options(),
        convert_options=readers.log_convert_options(),
    )


def _explain_read_failure(error: Exception, files: readers.RawFiles) -> SchemaError | None:
    """After a failed distributed read, find the file and line at fault (named files first)."""
    text = str(error)
    named = [p for p in files.logs if str(p) in text]
    problem = readers.diagnose_logs(named) or readers.diagnose_logs([p for p in files.logs if p not in named])
    return SchemaError(problem) if problem else None


# ---------------------------------------------------------------------------
# Adding up block summaries
# ---------------------------------------------------------------------------


@dataclass
class Totals:
    rows: int = 0
    kept_hashes: list = field(default_factory=list)
    kept_lengths: list = field(default_factory=list)
    kept_splits: list = field(default_factory=list)
    reordered: int = 0
    plays: list = field(default_factory=list)
    plays_rows: int = 0
    categories: dict = field(default_factory=lambda: {name: Counter() for name in CATEGORICAL_SEQUENCE_COLUMNS})
    dropped: dict = field(default_factory=dict)
    examples: dict = field(default_factory=dict)
    fragments: list = field(default_factory=list)

    def add(self, summary: dict, sign: int = 1) -> None:
        self.rows += sign * summary["rows"]
        if sign > 0:
            self.kept_hashes.append(summary["kept_hashes"])
            self.kept_lengths.append(summary["kept_lengths"])
            self.kept_splits.append(summary["kept_splits"])
            self.reordered += summary["reordered"]
            self.fragments.append(summary["fragments"])
        plays = summary["plays"]
        if sign < 0:
            plays = plays.set_column(2, "count", pc.negate(plays.column("count")))
        self.plays.append(plays)
        self.plays_rows += plays.num_rows
        if self.plays_rows > 4_000_000:  # keep the driver's memory bounded by the number of distinct tracks
            self.plays = [self.combined_plays()]
            self.plays_rows = self.plays[0].num_rows
        for name, counts in summary["categories"].items():
            for value, count in counts.items():
                self.categories[name][value] += sign * count
        self.add_drops(summary["dropped"], summary["examples"])

    def add_drops(self, dropped: dict, examples: dict) -> None:
        for reason, entry in dropped.items():
            total = self.dropped.setdefault(reason, {"sessions": 0, "rows": 0})
            total["sessions"] += entry["sessions"]
            total["rows"] += entry["rows"]
            kept_examples = self.examples.setdefault(reason, [])
            kept_examples.extend(examples.get(reason, [])[: EXAMPLES_PER_REASON - len(kept_examples)])

    def combined_plays(self) -> pa.Table:
        table = pa.concat_tables(self.plays)
        table = table.group_by(["split", "track_id"]).aggregate([("count", "sum")])
        table = table.rename_columns(["split", "track_id", "count"])
        return table.filter(pc.greater(table.column("count"), 0))


def _summaries(dataset):
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        for payload in batch.column("summary").to_pylist():
            yield pickle.loads(payload)


# ---------------------------------------------------------------------------
# Vocabulary, categories, track features
# ---------------------------------------------------------------------------


def build_vocabulary(plays: pa.Table, rule: dict) -> pa.Table:
    """Reserved tokens, then training tracks by play count (desc), ties by track id."""
    train = plays.filter(pc.equal(plays.column("split"), 0)).select(["track_id", "count"])
    order = pc.sort_indices(train, sort_keys=[("count", "descending"), ("track_id", "ascending")])
    train = train.take(order)
    if "top_k" in rule:
        train = train.slice(0, rule["top_k"])
    else:
        train = train.filter(pc.greater_equal(train.column("count"), rule["min_count"]))
    n = train.num_rows
    return pa.table({
        "track_id": pa.concat_arrays([pa.array(RESERVED_TOKENS, pa.string()), train.column("track_id").combine_chunks()]),
        "index": pa.array(np.arange(FIRST_TRACK_ID + n, dtype=np.int32)),
        "count": pa.concat_arrays([pa.array([0] * FIRST_TRACK_ID, pa.int64()), train.column("count").combine_chunks()]),
    })


def build_categories(counts: dict[str, Counter]) -> tuple[dict[str, list[str]], dict]:
    """Code 0 = pad/unknown, then schema.CATEGORICAL_VALUES, then unseen values by count."""
    categories, unseen = {}, {}
    for name, source in CATEGORICAL_SEQUENCE_COLUMNS.items():
        known = list(CATEGORICAL_VALUES[source])
        extra = sorted((v for v in counts[name] if v not in known and counts[name][v] > 0),
                       key=lambda v: (-counts[name][v], v))
        values = [UNKNOWN_CATEGORY, *known, *extra]
        if len(values) > MAX_CATEGORY_CODES:
            raise SchemaError(
                f"column {source} has {len(extra)} values outside the MSSD set (e.g. {', '.join(extra[:5])}); "
                f"at most {MAX_CATEGORY_CODES - 1 - len(known)} new values fit. Check that the files are MSSD logs."
            )
        categories[name] = values
        unseen[name] = {v: counts[name][v] for v in extra}
    return categories, unseen


def build_track_features(paths: tuple[Path, ...], vocab_ids: pa.Array) -> tuple[np.ndarray, dict]:
    """float32 [vocab, 30] aligned to vocabulary ids (see schema.TRACK_FEATURE_NAMES) and its manifest entry."""
    names = [n for n in TRACK_FEATURE_COLUMNS if n != "track_id"]
    vocab_size = len(vocab_ids)
    raw = np.zeros((vocab_size, len(names)), dtype=np.float64)
    have = np.zeros(vocab_size, dtype=bool)
    rows_read = duplicates = outside = 0
    invalid_mode = 0
    tracks_only = vocab_ids.slice(FIRST_TRACK_ID)
    for path in paths:
        for batch in readers.iter_track_feature_batches(path):
            rows_read += batch.num_rows
            index = pc.index_in(batch.column("track_id"), value_set=tracks_only)
            found = np.asarray(pc.is_valid(index).to_numpy(zero_copy_only=False))
            outside += int((~found).sum())
            rows = pc.fill_null(index, 0).to_numpy()[found].astype(np.int64) + FIRST_TRACK_ID
            if not len(rows):
                continue
            unique_rows, first = np.unique(rows, return_index=True)
            fresh = ~have[unique_rows]
            duplicates += len(rows) - int(fresh.sum())
            take = np.flatnonzero(found)[first[fresh]]
            values = np.empty((len(take), len(names)), dtype=np.float64)
            for j, name in enumerate(names):
                column = batch.column(name).take(pa.array(take))
                if name == "mode":
                    mode = [MODE_VALUES.get(v, np.nan) if v is not None else np.nan for v in column.to_pylist()]
                    invalid_mode += sum(v is not None and v not in MODE_VALUES for v in column.to_pylist())
                    values[:, j] = mode
                else:
                    values[:, j] = pc.fill_null(column, np.nan).to_numpy(zero_copy_only=False)
            raw[unique_rows[fresh]] = values
            have[unique_rows[fresh]] = True
    with_features = raw[have]
    nan_cells = {name: int(np.isnan(with_features[:, j]).sum()) for j, name in enumerate(names)}
    if have.any():
        mean = np.nanmean(np.where(np.isnan(with_features), np.nan, with_features), axis=0)
        std = np.nanstd(with_features, axis=0)
    else:
        mean = np.zeros(len(names))
        std = np.ones(len(names))
    mean = np.nan_to_num(mean)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    matrix = np.zeros((vocab_size, len(names) + 1), dtype=np.float32)
    standardised = (raw[have] - mean) / std
    matrix[have, : len(names)] = np.nan_to_num(standardised, nan=0.0)  # NaN cells: imputed with the mean
    matrix[~have, len(names)] = 1.0  # features_missing: reserved ids and tracks without a row
    info = {
        "names": list(TRACK_FEATURE_NAMES),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "files": [p.name for p in paths],
        "rows_read": rows_read,
        "rows_outside_vocabulary": outside,
        "duplicate_rows": duplicates,
        "tracks_with_features": int(have[FIRST_TRACK_ID:].sum()),
        "missing": int((~have[FIRST_TRACK_ID:]).sum()),
        "nan_cells_imputed": {k: v for k, v in nan_cells.items() if v},
        "invalid_mode_values": invalid_mode,
    }
    return matrix, info


# ---------------------------------------------------------------------------
# Output directory
# ---------------------------------------------------------------------------

_OUR_ENTRIES = set(PREPARED_FILES) | {"sessions"}


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SchemaError(f"{out}: exists and is not a directory. Choose another --out.")
    if out.is_dir():
        foreign = [p.name for p in out.iterdir() if p.name not in _OUR_ENTRIES]
        if foreign:
            raise SchemaError(
                f"{out}: exists and holds files that are not a prepared dataset ({', '.join(sorted(foreign)[:3])}); "
                "refusing to overwrite. Choose an empty or new --out."
            )


def _install(staging: Path, out: Path) -> None:
    """Replace `out` by `staging` with renames (atomic on one filesystem)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)


def _collect_split_dirs(written: Path, staging: Path) -> dict[str, int]:
    files = {}
    for split in SPLITS:
        target = staging / "sessions" / split
        target.mkdir(parents=True, exist_ok=True)
        source = written / f"split={split}"
        shards = sorted(source.glob("*.parquet")) if source.is_dir() else []
        for i, shard in enumerate(shards):
            shard.rename(target / f"part-{i:05d}.parquet")
        files[split] = len(shards)
    shutil.rmtree(written, ignore_errors=True)
    return files


# ---------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------


def fingerprint(files: readers.RawFiles, options: PrepareOptions) -> str:
    """Hash of the inputs (names, sizes, first/last MiB) and of the options that shape the output."""
    content = {
        "format_version": FORMAT_VERSION,
        "inputs": readers.input_fingerprint(files),
        "vocabulary": options.vocabulary_rule(),
        "split": asdict(options.split_rule()),
    }
    if not options.fold:
        del content["split"]["fold"]  # fold 0 keeps the fingerprints of data prepared before folds existed
    return hashlib.blake2b(json.dumps(content, sort_keys=True).encode(), digest_size=16).hexdigest()


def _log(options: PrepareOptions, message: str) -> None:
    if options.show_progress:
        print(f"[prepare] {message}", file=sys.stderr, flush=True)


def prepare(options: PrepareOptions) -> dict:
    """Prepare `options.raw` into `options.out`; returns the manifest (also written as manifest.json)."""
    options.validate()
    started = time.perf_counter()
    raw, out = Path(options.raw).resolve(), Path(options.out).resolve()
    files = readers.find_raw_files(raw)
    readers.validate_raw_files(files)
    _check_out(out)
    init_ray(options.address)
    rule = options.split_rule()
    staging = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    try:
        manifest = _prepare(options, files, rule, staging, started)
        _install(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if options.show_progress:
        print(summary_table(manifest), file=sys.stderr, flush=True)
    return manifest


def _prepare(options: PrepareOptions, files: readers.RawFiles, rule: SplitRule, staging: Path, started: float) -> dict:
    import ray.data

    size = sum(p.stat().st_size for p in files.logs)
    _log(options, f"pass 1/2: reading {len(files.logs)} log file(s) ({size / 2**20:.1f} MiB) into sessions")
    try:
        staged = _read_logs(files).map_batches(
            sessionize_block, fn_kwargs={"rule": rule}, batch_size=None, batch_format="pyarrow"
        ).materialize()
    except Exception as error:  # a worker failed: say which file and line, if the input is at fault
        explained = _explain_read_failure(error, files)
        if explained:
            raise explained from None
        raise
    read_seconds = time.perf_counter() - started

    _log(options, "counting plays, categories and drops")
    totals = Totals()
    for summary in _summaries(staged.map_batches(summarize_block, batch_size=None, batch_format="pyarrow")):
        totals.add(summary)
    kept_in_blocks = sum(len(h) for h in totals.kept_hashes)
    dropped_in_blocks = sum(entry["sessions"] for entry in totals.dropped.values())
    fragments = pa.concat_tables(totals.fragments) if totals.fragments else empty_staged()
    merge = merge_fragments(fragments, rule)
    totals.add_drops(merge.dropped, merge.examples)
    sessions_read = kept_in_blocks + dropped_in_blocks + merge.sessions
    if merge.merged.num_rows:
        merged_summary = pickle.loads(summarize_block(merge.merged).column("summary")[0].as_py())
        merged_summary["rows"] = 0  # fragment rows were counted as read already
        totals.add(merged_summary)

    # The same session id complete in two places: drop every copy (counted).
    hashes = np.concatenate(totals.kept_hashes) if totals.kept_hashes else np.zeros(0, np.uint64)
    lengths = np.concatenate(totals.kept_lengths) if totals.kept_lengths else np.zeros(0, np.int32)
    splits = np.concatenate(totals.kept_splits) if totals.kept_splits else np.zeros(0, np.int8)
    unique, counts = np.unique(hashes, return_counts=True)
    duplicate_hashes = unique[counts > 1]
    if len(duplicate_hashes):
        _drop_duplicates(staged, merge.merged, duplicate_hashes, totals, hashes, lengths)
    keep = ~np.isin(hashes, duplicate_hashes)

    plays = totals.combined_plays()
    vocab = build_vocabulary(plays, options.vocabulary_rule())
    vocab_ids = vocab.column("track_id").combine_chunks()
    categories, unseen_categories = build_categories(totals.categories)

    _log(options, f"pass 2/2: encoding and writing sessions (vocabulary {len(vocab_ids):,} ids)")
    to_encode = staged if not merge.merged.num_rows else staged.union(ray.data.from_arrow(merge.merged))
    written = staging / "_written"
    to_encode.map_batches(
        encode_block,
        fn_kwargs={"vocab_track_ids": vocab_ids.slice(FIRST_TRACK_ID), "categories": categories, "drop_hashes": duplicate_hashes},
        batch_size=None,
        batch_format="pyarrow",
    ).write_parquet(str(written), partition_cols=["split"], **SHARD_WRITE_OPTIONS)
    shard_files = _collect_split_dirs(written, staging)
    pq.write_table(vocab, staging / "vocab.parquet")

    _log(options, f"track features from {len(files.track_features)} file(s)")
    features, feature_info = build_track_features(files.track_features, vocab_ids)
    np.save(staging / "track_features.npy", features)
    (staging / "categories.json").write_text(json.dumps(categories, indent=1))

    split_info = {}
    in_vocab = pc.is_in(plays.column("track_id"), value_set=vocab_ids.slice(FIRST_TRACK_ID))
    for index, name in enumerate(SPLITS):
        mine = keep & (splits == index)
        of_split = pc.equal(plays.column("split"), index)
        split_plays = pc.sum(plays.filter(of_split).column("count")).as_py() or 0
        known_plays = pc.sum(plays.filter(pc.and_(of_split, in_vocab)).column("count")).as_py() or 0
        split_info[name] = {
            "sessions": int(mine.sum()),
            "rows": int(lengths[mine].sum()),
            "files": shard_files[name],
            "tracks_seen": int(pc.sum(of_split).as_py() or 0),
            "unk_plays": int(split_plays - known_plays),
        }
    kept_sessions = int(keep.sum())
    kept_rows = int(lengths[keep].sum())
    dropped_rows = {r: totals.dropped[r]["rows"] for r in DROP_REASONS if r in totals.dropped}
    dropped_sessions = {r: totals.dropped[r]["sessions"] for r in DROP_REASONS if r in totals.dropped and r != "missing_session_id"}
    if kept_rows + sum(dropped_rows.values()) != totals.rows or kept_sessions + sum(dropped_sessions.values()) != sessions_read:
        raise RuntimeError(
            f"internal accounting error: rows read {totals.rows}, kept {kept_rows}, dropped {dropped_rows}; "
            f"sessions read {sessions_read}, kept {kept_sessions}, dropped {dropped_sessions}"
        )
    train_plays = plays.filter(pc.equal(plays.column("split"), 0))
    manifest = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint(files, options),
        "options": {
            "raw": str(Path(options.raw).resolve()),
            **options.vocabulary_rule(),
            "val_fraction": options.val_fraction,
            "test_fraction": None if options.test_dates else options.test_fraction,
            "test_dates": list(options.test_dates or []),
            "fold": options.fold,
        },
        "inputs": {"logs": [p.name for p in files.logs], "track_features": [p.name for p in files.track_features]},
        "rows": {"read": totals.rows, "kept": kept_rows, "dropped": dropped_rows},
        "sessions": {
            "read": sessions_read,
            "kept": kept_sessions,
            "dropped": dropped_sessions,
            "dropped_examples": totals.examples,
            "reordered": totals.reordered,
            "merged_from_fragments": int(merge.merged.num_rows),
            "split_across_files": merge.split_across_files,
            "split_across_files_examples": merge.split_across_files_examples,
        },
        "splits": split_info,
        "vocab": {
            "size": len(vocab_ids),
            **options.vocabulary_rule(),
            "tracks": len(vocab_ids) - FIRST_TRACK_ID,
            "tracks_seen": int(train_plays.num_rows),
            "tracks_seen_all_splits": len(pc.unique(plays.column("track_id"))),
            "unk_plays": sum(s["unk_plays"] for s in split_info.values()),
            "unk_plays_train": split_info["train"]["unk_plays"],
        },
        "categories": {"unseen_values": unseen_categories},
        "track_features": feature_info,
        "timing": {"read_and_sessionize_s": round(read_seconds, 2), "total_s": round(time.perf_counter() - started, 2)},
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _drop_duplicates(staged, merged: pa.Table, duplicate_hashes: np.ndarray, totals: Totals,
                     hashes: np.ndarray, lengths: np.ndarray) -> None:
    """Take every copy of a duplicated session id back out of the counts and count it as dropped."""
    import ray.data

    def pick(table: pa.Table) -> pa.Table:
        return table.filter(pa.array(np.isin(table.column("hash").to_numpy(), duplicate_hashes)
                                     & (table.column("status").to_numpy() == 0)))

    source = staged if not merged.num_rows else staged.union(ray.data.from_arrow(merged))
    copies = pa.concat_tables(list(source.map_batches(pick, batch_size=None, batch_format="pyarrow")
                                   .iter_batches(batch_size=None, batch_format="pyarrow")) or [merged.slice(0, 0)])
    summary = pickle.loads(summarize_block(copies).column("summary")[0].as_py())
    summary["rows"] = 0
    summary["dropped"] = {}
    totals.add(summary, sign=-1)
    mask = np.isin(hashes, duplicate_hashes)
    examples = [{"session_id": s, "files": [p]} for s, p in zip(copies.column("session_id").to_pylist()[:EXAMPLES_PER_REASON],
                                                                 copies.column("path").to_pylist())]
    totals.add_drops({"duplicate_session_id": {"sessions": int(mask.sum()), "rows": int(lengths[mask].sum())}},
                     {"duplicate_session_id": examples})


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


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_pipeline.prepare",
        description="Turn raw MSSD session logs (log_*.csv[.gz] or .parquet) and track features (tf_*) "
        "into a prepared dataset (parquet sessions per split, vocabulary, track features, manifest).",
    )
    # str, not Path: Path would fold a URI's "s3://" into "s3:/" before PrepareOptions.validate can name it
    parser.add_argument("--raw", required=True, help="folder with log_* and tf_* files (local or shared, not a URI)")
    parser.add_argument("--out", required=True, help="prepared dataset folder, created or replaced (local or shared, "
                        "not a URI: copy it to a bucket afterwards)")
    vocab = parser.add_mutually_exclusive_group()
    vocab.add_argument("--min-count", type=int, help=f"keep tracks played at least N times in training "
                       f"(default {DEFAULT_MIN_COUNT}; the paper used 150)")
    vocab.add_argument("--top-k", type=int, help="keep the K most played training tracks (the paper: 103000)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of sessions for validation (default 0.1)")
    test = parser.add_mutually_exclusive_group()
    test.add_argument("--test-fraction", type=float, default=0.1, help="share of sessions for test (default 0.1)")
    test.add_argument("--test-dates", nargs="+", metavar="YYYY-MM-DD", help="test = sessions of these dates")
    parser.add_argument("--fold", type=int, default=0, help="rotate the hash split by k test fractions: folds "
                        "0..n-1 (n = 1/test-fraction) test every session once, i.e. n-fold cross-validation (default 0)")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local instance)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summary table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = PrepareOptions(
        raw=args.raw, out=args.out, min_count=args.min_count, top_k=args.top_k,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction, test_dates=args.test_dates,
        fold=args.fold, show_progress=not args.quiet, address=args.address,
    )
    try:
        manifest = prepare(options)
    except SchemaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"prepared {manifest['sessions']['kept']:,} sessions into {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
