"""Turn raw MSSD files into a prepared dataset, on Ray Data.

    python -m data_pipeline.prepare --raw DIR [DIR ...] --out DIR [--min-count N | --top-k K]
        [--val-fraction F] [--test-fraction F | --test-dates D [D ...]] [--fold K] [--address ADDR] [--verbose]

Runs on a local Ray instance (all cores) or on a cluster (``--address`` or
``RAY_ADDRESS``; the raw and output folders must then be on storage every node
sees). ``--raw`` takes the MSSD ``training_set`` and ``track_features``
folders, or their parent (``readers.find_raw_files``). The passes:

1. *sessionize* (Ray Data, one task per log file): read the file in Arrow
   batches and turn them into staged session records with vectorised kernels
   (``sessions.sessionize_file``); the records stay in Ray's object store;
2. *count*: each pass-1 task also counted its blocks (plays per track and
   split, categorical values, drops by reason) into a ``counts`` column; the
   driver reads that column alone and adds them up
   (``manifest.Totals``), merges the sessions cut at file boundaries
   (``sessions.merge_fragments``) and drops every copy of an id complete in
   two places;
3. *vocabulary and categories* on the driver (``vocabulary``): ids 0..3
   reserved, then training tracks by play count, ties by track id;
4. *encode and write* (Ray Data): vocabulary ids and category codes, parquet
   shards per split (``encoding.encode_block``); then ``vocab.parquet``,
   ``track_features.npy`` (``features``), ``categories.json`` and
   ``manifest.json`` (``manifest``).

The track features take two Ray tasks that run where a CPU would otherwise
wait: parsing the ``tf_*`` files (``features.read_track_features``) beside the
driver's counting, aligning them to the vocabulary
(``features.build_track_features``) beside pass 4.

Splits are deterministic (``splits``): by a 64-bit hash of session_id (default 10% val,
10% test), or test = sessions dated ``--test-dates`` (val by hash among the
rest). A session's date is the date of its first position.

Vocabulary size: by default every track played at least once in the training
split (``--min-count 1``), so nothing seen in training is lost; the paper kept
tracks played at least 150 times (``--min-count 150``, about 103K tracks on
the full MSSD; ``--top-k 103000`` is the equivalent cap). Tracks outside the
vocabulary become ``<unk>`` (id 3) and are counted in the manifest.

The output directory is written next to its final place and renamed into it at
the end, so a crashed run never leaves a half-written dataset behind.
Bad input ends in one line on stderr that names the file, line or session
and says what to do (exit status 2), whichever pass found it; ``--verbose``
adds the full trace and Ray's own output. A run that keeps no session, or a
``--test-dates`` that matches none, is such an error too.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import shutil
import sys
import time
import traceback
import uuid
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_pipeline import readers
from data_pipeline.features import build_track_features, read_track_features
from data_pipeline.manifest import Books, Totals, build_manifest, split_entries, summary_table, vocabulary_entry
from data_pipeline.ray_runtime import init_ray
from data_pipeline.schema import CONTENT_VERSION, FIRST_TRACK_ID, PREPARED_FILES, SPLITS, SchemaError, to_shard_table
from data_pipeline.encoding import encode_block
from data_pipeline.sessions import (
    COUNTS_COLUMN,
    DROP_REASONS,
    EXAMPLES_PER_REASON,
    KEPT,
    MergeResult,
    count_block,
    merge_fragments,
    read_counts,
    sessionize_files,
)
from data_pipeline.splits import SplitRule
from data_pipeline.vocabulary import build_categories, build_vocabulary

DEFAULT_MIN_COUNT = 1
# zstd level 1 without dictionary pages: faster to write and to read back than
# the snappy + dictionary default, at about the same size. Statistics only for
# the per-session columns: min/max of 20-slot lists help no reader and cost a
# fifth of the write.
SHARD_WRITE_OPTIONS = {"compression": "zstd", "compression_level": 1, "use_dictionary": ["date"],
                       "write_statistics": ["session_id", "date", "length"]}
DROP_REASON_HELP = {
    "missing_session_id": "a row without a session id",
    "missing_values": "a session with an empty cell in one of its rows",
    "inconsistent_length": "rows of one session disagree on session_length",
    "length_out_of_range": "a session outside 10..20 tracks",
    "position_out_of_range": "a session_position outside 1..session_length",
    "duplicate_positions": "a position given twice",
    "missing_positions": "a position missing (e.g. rows lost at the end of a truncated file)",
    "duplicate_session_id": "the same session id complete in two places (every copy is dropped)",
}


@dataclass
class PrepareOptions:
    """What to prepare and how. `min_count` and `top_k` are exclusive (default: min_count 1)."""

    raw: str | Path | Sequence[str | Path]  # folders and/or files; see readers.find_raw_files
    out: str | Path
    min_count: int | None = None
    top_k: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    test_dates: list[str] | tuple[str, ...] | None = None
    fold: int = 0  # rotate the hash split (see SplitRule): folds 0..1/test_fraction-1 are cross-validation
    show_progress: bool = True  # progress lines and the summary table on stderr
    verbose: bool = False  # Ray's own output, and the full trace of an error
    address: str | None = None  # Ray cluster address; None: RAY_ADDRESS or a local instance

    def raw_paths(self) -> list[str | Path]:
        return [self.raw] if isinstance(self.raw, (str, Path)) else list(self.raw)

    def validate(self) -> None:
        # Cloud URIs: prepare reads and writes local or shared paths only (readers, atomic rename of the output).
        for raw in self.raw_paths():
            if isinstance(raw, str) and "://" in raw:
                raise SchemaError(
                    f"--raw {raw}: prepare reads from a local or shared path; copy the raw files down first "
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
        for value in self.test_dates or ():
            if not readers.is_iso_date(value):
                raise SchemaError(f"--test-dates {value}: not a date as YYYY-MM-DD (e.g. 2018-07-15).")
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

    def manifest_entry(self, files: readers.RawFiles) -> dict:
        """The options as manifest.json records them."""
        return {"raw": [str(r) for r in files.roots], **self.vocabulary_rule(), "val_fraction": self.val_fraction,
                "test_fraction": None if self.test_dates else self.test_fraction,
                "test_dates": list(self.test_dates or []), "fold": self.fold}

    def split_rule(self) -> SplitRule:
        return SplitRule(self.val_fraction, self.test_fraction, tuple(self.test_dates or ()), self.fold)

    def vocabulary_rule(self) -> dict:
        if self.top_k is not None:
            return {"top_k": self.top_k}
        return {"min_count": self.min_count if self.min_count is not None else DEFAULT_MIN_COUNT}


def fingerprint(files: readers.RawFiles, options: PrepareOptions) -> str:
    """Hash of the inputs (names, sizes, first/last MiB) and of the options that shape the output."""
    content = {
        "format_version": CONTENT_VERSION,
        "inputs": readers.input_fingerprint(files),
        "vocabulary": options.vocabulary_rule(),
        "split": asdict(options.split_rule()),
    }
    if not options.fold:
        del content["split"]["fold"]  # fold 0 keeps the fingerprints of data prepared before folds existed
    return hashlib.blake2b(json.dumps(content, sort_keys=True).encode(), digest_size=16).hexdigest()


# ---------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------


def prepare(options: PrepareOptions) -> dict:
    """Prepare `options.raw` into `options.out`; returns the manifest (also written as manifest.json)."""
    started = time.perf_counter()
    options.validate()
    files = readers.find_raw_files([Path(p).absolute() for p in options.raw_paths()])
    readers.check_headers(files)
    out = Path(options.out).absolute()
    _check_out(out)
    for note in files.notes:
        _say(f"note: {note}")
    if not files.track_features:
        _say(f"warning: no track-feature files (tf_*.csv, tf_*.csv.gz or tf_*.parquet) under "
             f"{', '.join(str(r) for r in files.roots)}: every track gets features_missing = 1. Pass the MSSD "
             "track_features folder too, e.g. --raw training_set track_features.")
    init_ray(options.address, verbose=options.verbose)
    with _staging(out) as staging, _input_errors_in_one_line(options.verbose), _every_cpu_per_pass():
        manifest = _prepare(options, files, staging, started)
    # Ray Data's executors hold the staged blocks in reference cycles: collecting the young generations (a few
    # milliseconds; a full collection takes a hundred) takes them out of the object store now, not some time later.
    gc.collect(1)
    if options.show_progress:
        print(summary_table(manifest), file=sys.stderr, flush=True)
    return manifest


def _prepare(options: PrepareOptions, files: readers.RawFiles, staging: Path, started: float) -> dict:
    import ray

    rule = options.split_rule()
    staged = _sessionize_pass(options, files, rule)
    read_seconds = time.perf_counter() - started
    # Track features run beside the driver's counting (parse) and pass 2 (aligned to the vocabulary), where a
    # CPU is free; beside pass 1 they would hold a CPU that reading the logs needs.
    feature_rows = ray.remote(read_track_features).remote(list(files.track_features),
                                                          [files.name(p) for p in files.track_features])
    feature_task = None
    try:
        accounts = _account(options, files, staged, rule)
        plays = accounts.totals.combined_plays()
        vocab = build_vocabulary(plays, options.vocabulary_rule())
        vocab_ids = vocab.column("track_id").combine_chunks()
        feature_task = ray.remote(build_track_features).remote(feature_rows, vocab_ids)
        categories, unseen_categories = build_categories(accounts.totals.categories)
        _progress(options, f"pass 2/2: encoding and writing sessions (vocabulary {len(vocab_ids):,} ids)")
        shard_files = _encode_pass(staged, accounts.merge, vocab_ids, categories, accounts.duplicates, staging)
        features, feature_info = ray.get(feature_task)  # a damaged tf_* file ends the run here: nothing is replaced
    except BaseException:
        _abandon(feature_task, feature_rows)
        raise
    split_info = split_entries(plays, vocab_ids, accounts.keep, accounts.splits, accounts.lengths, shard_files)
    manifest = build_manifest(
        fingerprint=fingerprint(files, options), options=options.manifest_entry(files),
        inputs={"logs": [files.name(p) for p in files.logs], "track_features": [files.name(p) for p in files.track_features]},
        books=accounts.books, totals=accounts.totals, merge=accounts.merge, log_paths=[str(p) for p in files.logs],
        splits=split_info, vocab=vocabulary_entry(plays, vocab_ids, options.vocabulary_rule(), split_info),
        unseen_categories=unseen_categories, track_features=feature_info,
        timing={"read_and_sessionize_s": round(read_seconds, 2), "total_s": round(time.perf_counter() - started, 2)},
    )
    pq.write_table(vocab, staging / "vocab.parquet")
    np.save(staging / "track_features.npy", features)
    (staging / "categories.json").write_text(json.dumps(categories, indent=1))
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


@dataclass
class _Accounts:
    """The driver's view after the count pass: totals, merged fragments, duplicates, and which sessions stay."""

    totals: Totals
    merge: MergeResult
    duplicates: np.ndarray  # hashes of ids kept in two places (every copy is dropped)
    keep: np.ndarray  # per session kept by a block or the merge: still kept
    lengths: np.ndarray
    splits: np.ndarray
    books: Books


# ---------------------------------------------------------------------------
# The passes
# ---------------------------------------------------------------------------


def _abandon(*tasks) -> None:
    """Cancel side tasks whose results will not be read, and read their errors now: Ray would print them later."""
    import ray

    for task in tasks:
        if task is not None:
            ray.cancel(task)
            with suppress(Exception):  # its failure or cancellation is not what ended this run
                ray.get(task)


def _sessionize_pass(options: PrepareOptions, files: readers.RawFiles, rule: SplitRule):
    """Pass 1: every log file -> staged session records, materialized in Ray's object store.

    One task per file (a file is read front to back, so a session is only cut
    where a file ends); Ray Data runs as many at once as there are CPUs.
    """
    import ray.data

    size = sum(p.stat().st_size for p in files.logs)
    _progress(options, f"pass 1/2: reading {len(files.logs)} log file(s) ({size / 2**20:.1f} MiB) into sessions")
    paths = [str(p) for p in files.logs]
    items = ray.data.from_items([{"file": i} for i in range(len(paths))], override_num_blocks=len(paths))
    return items.map_batches(sessionize_files, fn_kwargs={"paths": paths, "rule": rule}, batch_size=1,
                             batch_format="pyarrow").materialize()


def _count_pass(staged) -> Totals:
    """Every block's counts, made in pass 1 and read from its ``counts`` column alone, added up on the driver.

    ``ray.get`` of an Arrow block maps it from the object store without a
    copy, so reading one column touches only that column's memory, and no
    Ray Data execution (with its start-up) runs for it.
    """
    import ray

    totals = Totals()
    for ref in staged.to_arrow_refs():
        block = ray.get(ref)
        if block.num_rows:  # a file without rows leaves an empty block, without columns
            for counts in read_counts(block.column(COUNTS_COLUMN)):
                totals.add(counts)
    return totals


def _account(options: PrepareOptions, files: readers.RawFiles, staged, rule: SplitRule) -> _Accounts:
    """Count pass, fragments merged, duplicate ids dropped, books closed; an error when nothing is kept."""
    _progress(options, "counting plays, categories and drops")
    totals = _count_pass(staged)
    merge = merge_fragments(totals.all_fragments(), rule)
    sessions_read = _add_merged(totals, merge)
    duplicates = _drop_duplicate_ids(staged, merge, totals)
    hashes, lengths, splits = totals.kept()
    keep = ~np.isin(hashes, duplicates)
    books = Books.close(totals, sessions_read, keep, lengths)
    _check_kept(options, files, totals, books, splits[keep])
    return _Accounts(totals, merge, duplicates, keep, lengths, splits, books)


def _add_merged(totals: Totals, merge: MergeResult) -> int:
    """Count the sessions merged from fragments; returns the sessions read (kept + dropped, fragments once)."""
    sessions_read = sum(len(h) for h in totals.kept_hashes)
    sessions_read += sum(entry["sessions"] for entry in totals.dropped.values())
    sessions_read += merge.sessions
    totals.add_drops(merge.dropped, merge.examples)
    if merge.merged.num_rows:
        counts = count_block(merge.merged)
        counts.rows = 0  # fragment rows were counted as read already
        totals.add(counts)
    return sessions_read


def _drop_duplicate_ids(staged, merge: MergeResult, totals: Totals) -> np.ndarray:
    """Hashes of session ids kept in two places: every copy is taken back out of the counts and counted as dropped."""
    hashes, lengths, _ = totals.kept()
    unique, counts = np.unique(hashes, return_counts=True)
    duplicates = unique[counts > 1]
    if not len(duplicates):
        return duplicates

    def copies_of(table: pa.Table) -> pa.Table:
        mask = np.isin(table.column("hash").to_numpy(), duplicates) & (table.column("status").to_numpy() == KEPT)
        return table.filter(pa.array(mask)).drop_columns([COUNTS_COLUMN])

    copies = pa.concat_tables([merge.merged.slice(0, 0)] + [
        batch for batch in _records(staged, merge).map_batches(copies_of, batch_size=None, batch_format="pyarrow")
        .iter_batches(batch_size=None, batch_format="pyarrow")
    ])
    totals.subtract(count_block(copies))
    copied = np.isin(hashes, duplicates)
    files, lines, ids = (copies.column(c).to_pylist() for c in ("file", "line", "session_id"))
    examples = sorted(zip(files, lines, ids, [[f] for f in files]))[:EXAMPLES_PER_REASON]
    totals.add_drops({"duplicate_session_id": {"sessions": int(copied.sum()), "rows": int(lengths[copied].sum())}},
                     {"duplicate_session_id": examples})
    return duplicates


def _records(staged, merge: MergeResult):
    """Every staged record and the sessions merged from fragments (their ``counts`` column empty)."""
    import ray.data

    if not merge.merged.num_rows:
        return staged
    merged = merge.merged.append_column(COUNTS_COLUMN, pa.nulls(merge.merged.num_rows, pa.binary()))
    return staged.union(ray.data.from_arrow(merged))


def _encode_pass(staged, merge: MergeResult, vocab_ids: pa.Array, categories: dict, duplicates: np.ndarray,
                 staging: Path) -> dict[str, int]:
    """Pass 2: kept sessions -> parquet shards under staging/sessions/<split>/; returns shards per split."""
    written = _records(staged, merge).map_batches(
        write_shards,
        fn_kwargs={"out": str(staging / "sessions"), "vocab_track_ids": vocab_ids.slice(FIRST_TRACK_ID),
                   "categories": categories, "drop_hashes": duplicates},
        batch_size=None,
        batch_format="pyarrow",
    )
    names = [name for batch in written.iter_batches(batch_size=None, batch_format="pyarrow")
             for name in batch.column("shard").to_pylist()]
    return _name_shards(staging / "sessions", names)


def write_shards(table: pa.Table, out: str, **encoding) -> pa.Table:
    """Ray Data task: a staged block -> one parquet shard per split (``encode_block``); returns their paths.

    A shard is named after the block's first session (file index, line) so
    that shard order does not depend on scheduling; a random suffix keeps
    names apart should two blocks start alike.
    """
    sessions = encode_block(table, **encoding)
    if not sessions.num_rows:
        return pa.table({"shard": pa.array([], pa.string())})
    kept = table.column("status").to_numpy() == KEPT
    files, lines = table.column("file").to_numpy()[kept], table.column("line").to_numpy()[kept]
    first = np.lexsort((lines, files))[0]
    key = f"{files[first]:06d}-{lines[first]:012d}-{uuid.uuid4().hex[:8]}"
    shards = []
    for split in SPLITS:
        part = sessions.filter(pc.equal(sessions.column("split"), split)).drop_columns(["split"])
        if part.num_rows:
            path = Path(out) / split / f"{key}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(to_shard_table(part), path, **SHARD_WRITE_OPTIONS)
            shards.append(str(path))
    return pa.table({"shard": pa.array(shards, pa.string())})


def _name_shards(sessions: Path, written: list[str]) -> dict[str, int]:
    """Rename the shards of each split to part-00000.parquet, ... in name order; returns shards per split.

    Files the tasks did not report (left by an attempt Ray retried) are removed, so no session is there twice.
    """
    counts = {}
    for split in SPLITS:
        folder = sessions / split
        folder.mkdir(parents=True, exist_ok=True)
        mine = sorted(Path(p) for p in written if Path(p).parent == folder)
        for i, path in enumerate(mine):
            path.rename(folder / f"part-{i:05d}.parquet")
        for leftover in folder.iterdir():
            if not leftover.name.startswith("part-"):
                leftover.unlink()
        counts[split] = len(mine)
    return counts


def _check_kept(options: PrepareOptions, files: readers.RawFiles, totals: Totals, books: Books,
                kept_splits: np.ndarray) -> None:
    """A run that keeps nothing, or a test date that matches nothing, is an error rather than an empty dataset."""
    if books.kept_sessions == 0:
        drops = ", ".join(f"{reason} {rows:,}" for reason, rows in books.dropped_rows.items()) or "none"
        example = next((e for r in DROP_REASONS for e in totals.examples.get(r, [])), None)
        where = f" (e.g. session {example[2]} in {files.logs[example[0]]})" if example and example[2] else ""
        raise SchemaError(
            f"no session was kept: {books.rows_read:,} rows read from {len(files.logs)} log file(s), rows dropped by "
            f"reason: {drops}{where}. Nothing was written; see the drop reasons in `python -m data_pipeline.prepare --help`."
        )
    if options.test_dates and not (kept_splits == SPLITS.index("test")).any():
        raise SchemaError(
            f"--test-dates {' '.join(options.test_dates)}: no kept session has that date. "
            "Choose dates the logs cover (their file names carry them: log_<i>_<YYYYMMDD>_...)."
        )
    for index, name in enumerate(SPLITS):
        fraction = {"val": options.val_fraction, "test": 0.0 if options.test_dates else options.test_fraction}.get(name)
        if fraction and not (kept_splits == index).any():
            _say(f"warning: the {name} split is empty ({len(kept_splits):,} sessions kept, {name} fraction {fraction}).")


# ---------------------------------------------------------------------------
# Errors, progress, output directory
# ---------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress(options: PrepareOptions, message: str) -> None:
    if options.show_progress:
        _say(f"[prepare] {message}")


def _raw_input_cause(error: BaseException) -> readers.RawInputError | None:
    """The RawInputError a Ray task raised, from the exception Ray Data re-raised on the driver."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error) is readers.RawInputError:
            return error
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    return None


@contextmanager
def _input_errors_in_one_line(verbose: bool) -> Iterator[None]:
    """Bad input found inside a Ray Data task ends as its own one-line error, not Ray's report of a failed task.

    Ray Data logs a failed task at ERROR level before raising; the error is
    raised again here with its message, so (unless `verbose`) that log is noise.
    """
    logger = logging.getLogger("ray.data")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    except Exception as error:
        cause = _raw_input_cause(error)
        if cause is None:
            raise
        # Ray Data appends its retry advice to the task's exception message: keep our line only
        raise readers.RawInputError(str(cause).split("\n")[0]) from error
    finally:
        logger.setLevel(level)


@contextmanager
def _every_cpu_per_pass() -> Iterator[None]:
    """Let each pass use every CPU.

    Ray Data reserves half of the cluster for operators other than the
    running one by default; each of prepare's passes is a single map, so the
    reservation would leave half the CPUs idle (measured: 1.3 of 2 busy).
    """
    from ray.data import DataContext

    context = DataContext.get_current()
    reserving = context.op_resource_reservation_enabled
    context.op_resource_reservation_enabled = False
    try:
        yield
    finally:
        context.op_resource_reservation_enabled = reserving


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


@contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A folder next to `out` that replaces it (renames, atomic on one filesystem) when the body succeeds."""
    staging = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    try:
        yield staging
        if out.exists():
            old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    reasons = "\n".join(f"  {name}: {text}" for name, text in DROP_REASON_HELP.items())
    parser = argparse.ArgumentParser(
        prog="python -m data_pipeline.prepare",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Turn raw MSSD session logs (log_*.csv[.gz] or .parquet) and track features (tf_*)\n"
        "into a prepared dataset (parquet sessions per split, vocabulary, track features, manifest).",
        epilog=f"Sessions that cannot be used are dropped and counted in manifest.json by reason:\n{reasons}\n"
        "A file that cannot be read (wrong columns or types, damaged bytes) stops the run with one line naming "
        "the file and line (exit status 2).",
    )
    # str, not Path: Path would fold a URI's "s3://" into "s3:/" before PrepareOptions.validate can name it
    parser.add_argument("--raw", required=True, nargs="+", metavar="PATH",
                        help="folders (searched recursively) or files holding the log_* and tf_* files: e.g. the "
                        "MSSD training_set and track_features folders, or their parent (local or shared, not a URI)")
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
    parser.add_argument("--quiet", action="store_true", help="no progress lines or summary table (warnings still show)")
    parser.add_argument("--verbose", action="store_true", help="Ray's own log lines and progress bars, and the full "
                        "trace of an error")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = PrepareOptions(
        raw=args.raw, out=args.out, min_count=args.min_count, top_k=args.top_k,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction, test_dates=args.test_dates,
        fold=args.fold, show_progress=not args.quiet, verbose=args.verbose, address=args.address,
    )
    try:
        manifest = prepare(options)
    except SchemaError as error:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"prepared {manifest['sessions']['kept']:,} sessions into {Path(args.out).absolute()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
