"""The two encodings the driver decides once all blocks are counted: track vocabulary and category codes.

Vocabulary: ids 0..3 are the reserved tokens (``schema.RESERVED_TOKENS``),
then the tracks of the training split by play count (descending), ties by
track id, so the same data always gives the same ids. Which tracks: every
track played at least ``min_count`` times in training (default 1: nothing
seen in training is lost), or the ``top_k`` most played. Other tracks become
``<unk>`` (id 3) and are counted in the manifest.

Categories: per categorical column, code 0 is padding / unknown, then the
values MSSD is known to use (``schema.CATEGORICAL_VALUES``) in a fixed order,
then values outside that set by count, so real data with a new value is
kept, and counted, rather than dropped.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_pipeline.schema import (
    CATEGORICAL_SEQUENCE_COLUMNS,
    CATEGORICAL_VALUES,
    FIRST_TRACK_ID,
    RESERVED_TOKENS,
    UNKNOWN_CATEGORY,
    SchemaError,
)

MAX_CATEGORY_CODES = 127  # codes are int8


def build_vocabulary(plays: pa.Table, rule: dict) -> pa.Table:
    """Reserved tokens, then training tracks by play count (desc), ties by track id.

    `plays`: ``sessions.PLAYS_SCHEMA`` (track_id and plays per split). `rule`: {"min_count": n} or {"top_k": k}.
    """
    train = plays.select(["track_id", "train"]).rename_columns(["track_id", "count"])
    train = train.filter(pc.greater(train.column("count"), 0))
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
        seen = counts.get(name, Counter())
        extra = sorted((v for v in seen if v not in known and seen[v] > 0), key=lambda v: (-seen[v], v))
        values = [UNKNOWN_CATEGORY, *known, *extra]
        if len(values) > MAX_CATEGORY_CODES:
            raise SchemaError(
                f"column {source} has {len(extra)} values outside the MSSD set (e.g. {', '.join(extra[:5])}); "
                f"at most {MAX_CATEGORY_CODES - 1 - len(known)} new values fit. Check that the files are MSSD logs."
            )
        categories[name] = values
        unseen[name] = {v: seen[v] for v in extra}
    return categories, unseen
