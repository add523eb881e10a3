"""Rows -> sessions, one block at a time (pure pyarrow + numpy; Ray calls these per block).

``prepare`` runs three block functions over a Ray Dataset:

1. ``sessionize_block``: a block of raw log rows -> one *staged record* per
   session id in the block, with every per-position column scattered into 20
   slots by ``session_position``. Track ids and categorical values stay strings
   (dictionary-encoded) because the vocabulary is not known yet. A session whose
   rows in this block are exactly positions 1..L is final here (kept, or
   dropped with a reason); anything else (a session cut by a block or file
   boundary, or a broken one) becomes a *fragment*, merged later on the driver
   by ``merge_fragments``, which sees every fragment of a session id together.
   MSSD writes a session's rows contiguously in position order, so fragments
   are rare (at most two per block) and the fast path is a run-length scan; rows
   out of order or interleaved are sorted first and still handled.
2. ``summarize_block``: counts per staged block (plays per track and split,
   categorical values, drops by reason, session hashes for duplicate ids) that
   the driver adds up into the vocabulary and the manifest.
3. ``encode_block``: staged records -> rows of ``schema.PREPARED_SESSION_SCHEMA``
   (vocabulary ids, category codes) plus a ``split`` column.

Drop reasons, in the order they are checked (a session gets the first that applies):
``missing_values`` (a null cell in any of its rows), ``inconsistent_length``
(rows disagree on session_length), ``length_out_of_range`` (not 10..20),
``position_out_of_range`` (a position outside 1..session_length),
``duplicate_positions``, ``missing_positions``; and ``duplicate_session_id``
(the same id complete in two places). Rows without a session id are dropped as
``missing_session_id``.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_pipeline.schema import (
    CATEGORICAL_SEQUENCE_COLUMNS,
    FIRST_TRACK_ID,
    LOG_COLUMNS,
    MAX_SESSION_LENGTH,
    MIN_SESSION_LENGTH,
    PAD_ID,
    PREPARED_SESSION_SCHEMA,
    SEQUENCE_COLUMNS,
    SPLITS,
    UNK_ID,
)

S = MAX_SESSION_LENGTH
KEPT, FRAGMENT, DROPPED = 0, 1, 2

DROP_REASONS = (
    "missing_session_id",
    "missing_values",
    "inconsistent_length",
    "length_out_of_range",
    "position_out_of_range",
    "duplicate_positions",
    "missing_positions",
    "duplicate_session_id",
)
REASON_CODE = {name: i for i, name in enumerate(DROP_REASONS)}

# Fragment flags: what a block already saw wrong with a fragment's rows.
FLAG_NULL, FLAG_INCONSISTENT, FLAG_LENGTH, FLAG_POSITION, FLAG_DUPLICATE = 1, 2, 4, 8, 16

# Per-position columns whose values are strings until the vocabularies are known.
STRING_SLOT_COLUMNS = ("tracks", *CATEGORICAL_SEQUENCE_COLUMNS)
STRING_DICTIONARY = pa.dictionary(pa.int32(), pa.string())
SLOT_DICTIONARY = STRING_DICTIONARY  # track ids
CATEGORY_DICTIONARY = pa.dictionary(pa.int16(), pa.string())  # categorical values (few per block)
PATH_TYPE = pa.dictionary(pa.int32(), pa.string())  # one file per block: stored once
EXAMPLES_PER_REASON = 5


def staged_schema() -> pa.Schema:
    fields = [
        pa.field("session_id", pa.string()),
        pa.field("path", PATH_TYPE),
        pa.field("status", pa.int8()),
        pa.field("reason", pa.int8()),  # drop reason (DROPPED) or FLAG_* bits (FRAGMENT)
        pa.field("reordered", pa.bool_()),
        pa.field("hash", pa.uint64()),
        pa.field("split", pa.int8()),  # index into SPLITS; -1 until known
        pa.field("date", pa.string()),
        pa.field("length", pa.int32()),  # declared session_length
        pa.field("rows", pa.int32()),
        pa.field("position_bits", pa.int32()),  # bit p-1 set: position p present
    ]
    for column in SEQUENCE_COLUMNS:
        value_type = column.dtype
        if column.name == "tracks":
            value_type = SLOT_DICTIONARY
        elif column.name in CATEGORICAL_SEQUENCE_COLUMNS:
            value_type = CATEGORY_DICTIONARY
        fields.append(pa.field(column.name, pa.list_(value_type, S)))
    return pa.schema(fields)


STAGED_SCHEMA = staged_schema()


@dataclass(frozen=True)
class SplitRule:
    """Deterministic split by a stable hash of session_id, or test by date.

    Each session's hash maps to u in [0, 1): test is u < test_fraction, val the
    next val_fraction. `fold` k shifts both slices by k * test_fraction, so the
    test slices of folds 0..n-1 (n = 1 / test_fraction) are disjoint and every
    session is tested exactly once: n-fold cross-validation (with --test-dates,
    the val slice moves by k * val_fraction instead).
    """

    val_fraction: float = 0.1
    test_fraction: float = 0.1
    test_dates: tuple[str, ...] = ()
    fold: int = 0

    def assign(self, hashes: np.ndarray, dates: pa.Array) -> np.ndarray:
        """Split index (0 train, 1 val, 2 test) per session (`dates`: ISO strings)."""
        u = (hashes >> np.uint64(11)).astype(np.float64) / float(1 << 53)  # uniform in [0, 1)
        if self.fold:
            step = self.val_fraction if self.test_dates else self.test_fraction
            u = np.mod(u - self.fold * step, 1.0)
        split = np.zeros(len(hashes), dtype=np.int8)
        if self.test_dates:
            split[u < self.val_fraction] = 1
            on_test_date = pc.fill_null(pc.is_in(dates, value_set=pa.array(self.test_dates, pa.string())), False)
            split[np.asarray(on_test_date.to_numpy(zero_copy_only=False), dtype=bool)] = 2
        else:
            split[u < self.test_fraction + self.val_fraction] = 1
            split[u < self.test_fraction] = 2
        return split


def stable_hash(ids: pa.Array | list[str]) -> np.ndarray:
    """64-bit hash of each id: FNV-1a over its UTF-8 bytes, then the murmur3 finaliser.

    Stable across runs, machines and Python versions (it decides the splits),
    and vectorised over the Arrow string buffer (a Python hash per id costs
    more than sessionizing the block).
    """
    ids = pa.array(ids, pa.string()) if isinstance(ids, list) else ids.cast(pa.string())
    n = len(ids)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32)[ids.offset : ids.offset + n + 1]
    data = np.frombuffer(ids.buffers()[2], dtype=np.uint8) if ids.buffers()[2] is not None else np.zeros(1, np.uint8)
    starts, lengths = offsets[:-1].astype(np.int64), np.diff(offsets)
    h = np.full(n, 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    uniform = bool((lengths == lengths[0]).all())
    for j in range(int(lengths.max())):
        if uniform:
            h = (h ^ data[starts + j].astype(np.uint64)) * prime
        else:
            active = np.flatnonzero(lengths > j)
            h[active] = (h[active] ^ data[starts[active] + j].astype(np.uint64)) * prime
    for shift, multiplier in ((33, 0xFF51AFD7ED558CCD), (33, 0xC4CEB9FE1A85EC53), (33, None)):
        h ^= h >> np.uint64(shift)
        if multiplier:
            h *= np.uint64(multiplier)
    return h


# ---------------------------------------------------------------------------
# 1. sessionize
# ---------------------------------------------------------------------------


def _numpy(column: pa.ChunkedArray | pa.Array, dtype) -> np.ndarray:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.int8())
    return pc.fill_null(column, 0).to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def _dictionary_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Integer codes per row and the values they index (dictionary columns: unified across chunks)."""
    combined = column.combine_chunks()
    encoded = combined if pa.types.is_dictionary(combined.type) else pc.dictionary_encode(combined)
    return _numpy(encoded.indices, np.int32), encoded.dictionary


def _slots(values: np.ndarray, slot: np.ndarray, groups: int, dtype) -> np.ndarray:
    out = np.zeros(groups * S, dtype=dtype)
    out[slot] = values
    return out


def _fixed_list(flat: pa.Array) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(flat, S)


def empty_staged() -> pa.Table:
    return STAGED_SCHEMA.empty_table()


def _conform(table: pa.Table, path: str) -> pa.Table:
    """The 21 log columns with the schema's types (parquet input may use wider types).

    String columns may stay dictionary-encoded (CSV reads parse some that way).
    """
    columns = []
    for name, want in LOG_COLUMNS.items():
        column = table.column(name)
        if pa.types.is_string(want) and pa.types.is_dictionary(column.type):
            if column.type != STRING_DICTIONARY:
                column = column.cast(STRING_DICTIONARY)
            columns.append(column)
            continue
        if pa.types.is_date(column.type):
            column = pc.strftime(column, format="%Y-%m-%d")
        if column.type != want:
            try:
                column = column.cast(want)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise ValueError(f"{path}: column {name} cannot be read as {want} ({error})") from None
        columns.append(column)
    return pa.table(columns, names=list(LOG_COLUMNS))


def sessionize_block(table: pa.Table, rule: SplitRule) -> pa.Table:
    """Raw log rows (the 21 columns plus ``path``) -> staged session records."""
    path = table.column("path")[0].as_py() if table.num_rows and "path" in table.column_names else ""
    table = _conform(table, path)
    records = []
    session_ids = table.column("session_id")
    if session_ids.null_count:
        valid = pc.is_valid(session_ids)
        records.append(_missing_id_record(table.num_rows - pc.sum(valid).as_py(), path))
        table = table.filter(valid)
    if table.num_rows:
        records.append(_sessionize(table, rule, path))
    return pa.concat_tables(records) if records else empty_staged()


def _missing_id_record(rows: int, path: str) -> pa.Table:
    record = {field.name: pa.nulls(1, field.type) for field in STAGED_SCHEMA}
    record.update(
        path=pa.array([path], PATH_TYPE), status=pa.array([DROPPED], pa.int8()),
        reason=pa.array([REASON_CODE["missing_session_id"]], pa.int8()), rows=pa.array([rows], pa.int32()),
    )
    return pa.table(record, schema=STAGED_SCHEMA)


def _sessionize(table: pa.Table, rule: SplitRule, path: str) -> pa.Table:
    n = table.num_rows
    codes, session_ids = _dictionary_codes(table.column("session_id"))
    groups = len(session_ids)
    position = _numpy(table.column("session_position"), np.int64)
    length = _numpy(table.column("session_length"), np.int64)
    has_null = np.zeros(n, dtype=bool)
    for column in table.columns:
        if column.null_count:
            has_null |= _numpy(pc.is_null(column), bool)

    # Row order: MSSD rows are contiguous per session and in position order; only
    # sort when they are not (order maps sorted row -> original row).
    order = None
    run_starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    if len(run_starts) != groups:
        order = np.argsort(codes, kind="stable")
    sorted_codes = codes if order is None else codes[order]
    sorted_position = position if order is None else position[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    step = np.r_[1, np.diff(sorted_position)]
    step[starts] = 1
    reordered = np.add.reduceat((step <= 0).astype(np.int64), starts) > 0
    if reordered.any():
        within = np.lexsort((sorted_position, sorted_codes))
        order = within if order is None else order[within]
        sorted_codes = codes[order]
        sorted_position = position[order]
        step = np.r_[1, np.diff(sorted_position)]
        step[starts] = 1
    take = (lambda a: a) if order is None else (lambda a: a[order])
    length_rows, null_rows = take(length), take(has_null)
    size = np.diff(np.r_[starts, n])
    ends = starts + size - 1
    length_min = np.minimum.reduceat(length_rows, starts)
    length_max = np.maximum.reduceat(length_rows, starts)
    duplicate = np.add.reduceat((step == 0).astype(np.int64), starts) > 0
    gap_free = np.add.reduceat((step != 1).astype(np.int64), starts) == 0
    any_null = np.add.reduceat(null_rows.astype(np.int64), starts) > 0
    # Exactly positions 1..L, each once, all rows agreeing on L: final in this block.
    self_contained = (
        gap_free & (length_min == length_max) & (sorted_position[starts] == 1)
        & (sorted_position[ends] == length_min) & (size == length_min)
    )
    in_range = (length_min >= MIN_SESSION_LENGTH) & (length_max <= MAX_SESSION_LENGTH)

    status = np.full(groups, FRAGMENT, dtype=np.int8)
    reason = np.zeros(groups, dtype=np.int8)
    status[self_contained] = DROPPED
    reason[self_contained & any_null] = REASON_CODE["missing_values"]
    reason[self_contained & ~any_null & ~in_range] = REASON_CODE["length_out_of_range"]
    keep = self_contained & ~any_null & in_range
    status[keep] = KEPT
    fragment = ~self_contained
    bad_position = (sorted_position < 1) | (sorted_position > length_rows) | (sorted_position > S)
    flags = (
        FLAG_NULL * any_null
        + FLAG_INCONSISTENT * (length_min != length_max)
        + FLAG_LENGTH * ~in_range
        + FLAG_POSITION * (np.add.reduceat(bad_position.astype(np.int64), starts) > 0)
        + FLAG_DUPLICATE * duplicate
    ).astype(np.int8)
    reason[fragment] = flags[fragment]
    in_slots = (sorted_position >= 1) & (sorted_position <= S)
    bits = np.where(in_slots, np.left_shift(1, np.clip(sorted_position - 1, 0, S - 1)), 0)
    position_bits = np.bitwise_or.reduceat(bits, starts).astype(np.int32)

    slot = sorted_codes[in_slots].astype(np.int64) * S + sorted_position[in_slots] - 1
    first_row = starts if order is None else order[starts]  # original row of each session's first position
    hashes = stable_hash(session_ids)
    dates = pc.take(table.column("date"), pa.array(first_row)).cast(pa.string())
    split = np.full(groups, -1, dtype=np.int8)
    split[keep] = rule.assign(hashes[keep], dates.filter(pa.array(keep)))

    columns = {
        "session_id": session_ids,
        "path": pa.DictionaryArray.from_arrays(pa.array(np.zeros(groups, np.int32)), pa.array([path], pa.string())),
        "status": pa.array(status),
        "reason": pa.array(reason),
        "reordered": pa.array(reordered),
        "hash": pa.array(hashes),
        "split": pa.array(split),
        "date": dates,
        "length": pa.array(length_min.astype(np.int32)),
        "rows": pa.array(size.astype(np.int32)),
        "position_bits": pa.array(position_bits),
    }
    for column in SEQUENCE_COLUMNS:
        source = table.column(column.source)
        if column.name in STRING_SLOT_COLUMNS:
            row_codes, dictionary = _dictionary_codes(source)
            index_type = STAGED_SCHEMA.field(column.name).type.value_type.index_type
            if len(dictionary) > np.iinfo(index_type.to_pandas_dtype()).max:
                raise ValueError(
                    f"{path}: column {column.source} has {len(dictionary):,} distinct values in one block; "
                    "is this an MSSD log file?"
                )
            flat = _slots(take(row_codes)[in_slots], slot, groups, index_type.to_pandas_dtype())
            values = pa.DictionaryArray.from_arrays(pa.array(flat), dictionary)
        else:
            numpy_type = column.dtype.to_pandas_dtype()
            flat = _slots(take(_numpy(source, numpy_type))[in_slots], slot, groups, numpy_type)
            values = pa.array(flat, column.dtype)
        columns[column.name] = _fixed_list(values)
    return pa.table(columns, schema=STAGED_SCHEMA)


# ---------------------------------------------------------------------------
# fragments -> whole sessions (driver)
# ---------------------------------------------------------------------------


def _slot_matrix(table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name).combine_chunks()
    values = column.flatten()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return np.asarray(values.to_numpy(zero_copy_only=False)).reshape(len(column), S)


@dataclass
class MergeResult:
    merged: pa.Table  # staged records (status KEPT) of sessions completed from fragments
    dropped: dict  # reason -> {"sessions": n, "rows": n}
    examples: dict  # reason -> [{"session_id", "files"}]
    sessions: int  # distinct session ids among the fragments
    rows: int
    split_across_files: int
    split_across_files_examples: list


def merge_fragments(fragments: pa.Table, rule: SplitRule) -> MergeResult:
    """Bring every fragment of a session id together: a whole session or a counted drop."""
    result = MergeResult(empty_staged(), {}, {}, 0, 0, 0, [])
    if fragments.num_rows == 0:
        return result
    ids = fragments.column("session_id").to_pylist()
    by_id: dict[str, list[int]] = {}
    for i, session_id in enumerate(ids):
        by_id.setdefault(session_id, []).append(i)
    paths = fragments.column("path").to_pylist()
    flags = fragments.column("reason").to_numpy()
    lengths = fragments.column("length").to_numpy()
    rows = fragments.column("rows").to_numpy()
    bits = fragments.column("position_bits").to_numpy()
    dates = fragments.column("date").to_pylist()
    slots = {c.name: _slot_matrix(fragments, c.name) for c in SEQUENCE_COLUMNS}
    merged: dict[str, list] = {name: [] for name in STAGED_SCHEMA.names}
    result.sessions = len(by_id)
    for session_id, index in by_id.items():
        files = sorted({paths[i] for i in index})
        total_rows = int(rows[index].sum())
        result.rows += total_rows
        if len(files) > 1:
            result.split_across_files += 1
            if len(result.split_across_files_examples) < EXAMPLES_PER_REASON:
                result.split_across_files_examples.append({"session_id": session_id, "files": files})
        flag = int(np.bitwise_or.reduce(flags[index]))
        seen = 0
        for i in index:
            if seen & int(bits[i]):
                flag |= FLAG_DUPLICATE
            seen |= int(bits[i])
        length = int(lengths[index[0]])
        if len(set(lengths[index].tolist())) > 1:
            flag |= FLAG_INCONSISTENT
        reason = _fragment_reason(flag, seen, total_rows, length)
        if reason:
            entry = result.dropped.setdefault(reason, {"sessions": 0, "rows": 0})
            entry["sessions"] += 1
            entry["rows"] += total_rows
            examples = result.examples.setdefault(reason, [])
            if len(examples) < EXAMPLES_PER_REASON:
                examples.append({"session_id": session_id, "files": files})
            continue
        owner = np.zeros(S, dtype=np.int64)  # which fragment holds each position
        for i in index:
            for p in range(S):
                if int(bits[i]) >> p & 1:
                    owner[p] = i
        merged["session_id"].append(session_id)
        merged["path"].append(files[0])
        merged["status"].append(KEPT)
        merged["reason"].append(0)
        merged["reordered"].append(False)
        merged["date"].append(dates[owner[0]])
        merged["length"].append(length)
        merged["rows"].append(total_rows)
        merged["position_bits"].append(seen)
        for column in SEQUENCE_COLUMNS:
            values = slots[column.name][owner, np.arange(S)]
            if column.name in STRING_SLOT_COLUMNS:
                values = [v if p < length else values[0] for p, v in enumerate(values.tolist())]
            merged[column.name].append(values)
    if merged["session_id"]:
        hashes = stable_hash(merged["session_id"])
        merged["hash"] = hashes
        merged["split"] = rule.assign(hashes, pa.array(merged["date"], pa.string()))
        result.merged = _staged_from_lists(merged)
    return result


def _fragment_reason(flag: int, bits: int, rows: int, length: int) -> str | None:
    if flag & FLAG_NULL:
        return "missing_values"
    if flag & FLAG_INCONSISTENT:
        return "inconsistent_length"
    if flag & FLAG_LENGTH or not MIN_SESSION_LENGTH <= length <= MAX_SESSION_LENGTH:
        return "length_out_of_range"
    if flag & FLAG_POSITION:
        return "position_out_of_range"
    if flag & FLAG_DUPLICATE:
        return "duplicate_positions"
    if bits != (1 << length) - 1 or rows != length:
        return "missing_positions"
    return None


def _staged_from_lists(columns: dict[str, list]) -> pa.Table:
    arrays = {}
    for field in STAGED_SCHEMA:
        values = columns[field.name]
        if pa.types.is_fixed_size_list(field.type):
            flat = np.concatenate([np.asarray(v) for v in values])
            inner = field.type.value_type
            if pa.types.is_dictionary(inner):
                encoded = pc.dictionary_encode(pa.array(flat.tolist(), pa.string()))
                array = pa.DictionaryArray.from_arrays(encoded.indices.cast(inner.index_type), encoded.dictionary)
            else:
                array = pa.array(flat, inner)
            arrays[field.name] = _fixed_list(array)
        else:
            plain = pa.types.is_string(field.type) or pa.types.is_dictionary(field.type)
            arrays[field.name] = pa.array(values if plain else np.asarray(values), field.type)
    return pa.table(arrays, schema=STAGED_SCHEMA)


# ---------------------------------------------------------------------------
# 2. summarize
# ---------------------------------------------------------------------------


def _kept_slot_codes(table: pa.Table, name: str) -> tuple[np.ndarray, pa.Array]:
    """Dictionary codes [N, 20] of a string slot column (one chunk) and its dictionary."""
    column = table.column(name).combine_chunks()
    values = column.flatten()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_dictionary(values.type):
        values = pc.dictionary_encode(values)
    return _numpy(values.indices, np.int64).reshape(len(column), S), values.dictionary


def summarize_block(table: pa.Table) -> pa.Table:
    """A staged block -> one row holding its counts (pickled; the driver adds them up)."""
    status = table.column("status").to_numpy()
    summary: dict = {"rows": int(pc.sum(table.column("rows")).as_py() or 0)}
    kept = table.filter(pa.array(status == KEPT))
    length = kept.column("length").to_numpy()
    split = kept.column("split").to_numpy()
    valid = np.arange(S)[None, :] < length[:, None]
    summary["kept_hashes"] = kept.column("hash").to_numpy()
    summary["kept_lengths"] = length.astype(np.int32)
    summary["kept_splits"] = split
    summary["reordered"] = int(pc.sum(kept.column("reordered")).as_py() or 0)
    track_codes, track_dictionary = _kept_slot_codes(kept, "tracks")
    plays = []
    for index, name in enumerate(SPLITS):
        counts = np.bincount(track_codes[valid & (split == index)[:, None]], minlength=len(track_dictionary))
        present = np.flatnonzero(counts)
        plays.append(pa.table({
            "split": pa.array(np.full(len(present), index, np.int8)),
            "track_id": track_dictionary.take(pa.array(present)),
            "count": pa.array(counts[present].astype(np.int64)),
        }))
    summary["plays"] = pa.concat_tables(plays)
    summary["categories"] = {}
    for name in CATEGORICAL_SEQUENCE_COLUMNS:
        codes, dictionary = _kept_slot_codes(kept, name)
        counts = np.bincount(codes[valid], minlength=len(dictionary))
        summary["categories"][name] = {
            value: int(c) for value, c in zip(dictionary.to_pylist(), counts.tolist()) if c
        }
    dropped = table.filter(pa.array(status == DROPPED))
    summary["dropped"] = {}
    summary["examples"] = {}
    for session_id, path, reason, rows in zip(
        dropped.column("session_id").to_pylist(), dropped.column("path").to_pylist(),
        dropped.column("reason").to_pylist(), dropped.column("rows").to_pylist(),
    ):
        name = DROP_REASONS[reason]
        entry = summary["dropped"].setdefault(name, {"sessions": 0, "rows": 0})
        entry["sessions"] += session_id is not None
        entry["rows"] += rows
        examples = summary["examples"].setdefault(name, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append({"session_id": session_id, "files": [path]})
    summary["fragments"] = table.filter(pa.array(status == FRAGMENT))
    return pa.table({"summary": pa.array([pickle.dumps(summary)], pa.binary())})


# ---------------------------------------------------------------------------
# 3. encode
# ---------------------------------------------------------------------------


def _map_dictionary(column: pa.ChunkedArray, value_set: pa.Array, offset: int, missing: int) -> np.ndarray:
    """String slots -> int codes: index in `value_set` + offset, `missing` when absent. [N, 20]"""
    codes, dictionary = _kept_slot_codes(pa.table({"c": column}), "c")
    found = pc.index_in(dictionary, value_set=value_set)
    lookup = np.where(_numpy(pc.is_valid(found), bool), _numpy(found, np.int64) + offset, missing)
    return lookup[codes] if len(lookup) else np.zeros_like(codes)


def encode_block(
    table: pa.Table, vocab_track_ids: pa.Array, categories: dict[str, list[str]], drop_hashes: np.ndarray
) -> pa.Table:
    """Kept staged records -> prepared sessions (vocabulary ids, category codes) plus ``split``.

    `vocab_track_ids`: the vocabulary's track ids in id order, from FIRST_TRACK_ID on.
    """
    keep = table.column("status").to_numpy() == KEPT
    if len(drop_hashes):
        keep &= ~np.isin(table.column("hash").to_numpy(), drop_hashes)
    table = table.filter(pa.array(keep))
    length = table.column("length").to_numpy()
    padding = np.arange(S)[None, :] >= length[:, None]
    columns = {
        "session_id": table.column("session_id"),
        "date": table.column("date"),
        "length": pa.array(length.astype(np.int8)),
    }
    for column in SEQUENCE_COLUMNS:
        if column.name == "tracks":
            values = _map_dictionary(table.column("tracks"), vocab_track_ids, FIRST_TRACK_ID, UNK_ID)
        elif column.name in CATEGORICAL_SEQUENCE_COLUMNS:
            values = _map_dictionary(table.column(column.name), pa.array(categories[column.name]), 0, 0)
        else:
            # Already the final type, zero past `length` (slots start as zeros): pass through, no copy.
            columns[column.name] = table.column(column.name)
            continue
        values = np.where(padding, PAD_ID, values).astype(column.dtype.to_pandas_dtype())
        columns[column.name] = _fixed_list(pa.array(values.reshape(-1), column.dtype))
    out = pa.table(columns, schema=PREPARED_SESSION_SCHEMA)
    split_names = np.asarray(SPLITS, dtype=object)[table.column("split").to_numpy()]
    return out.append_column("split", pa.array(split_names, pa.string()))
