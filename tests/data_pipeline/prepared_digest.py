"""A content digest of a prepared dataset: equal digests mean the same sessions, vocabulary, features and categories."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_pipeline.schema import PREPARED_SESSION_SCHEMA, SPLITS, from_shard_table


def _update(digest, column: pa.ChunkedArray) -> None:
    column = column.combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        digest.update(column.flatten().to_numpy(zero_copy_only=False).astype("<i8").tobytes())
    elif pa.types.is_string(column.type):
        digest.update("\0".join(column.to_pylist()).encode())
    else:
        digest.update(column.to_numpy(zero_copy_only=False).astype("<i8").tobytes())


def prepared_digest(root: Path) -> dict[str, str]:
    """Per split (sessions in session-id order, every column and slot), vocabulary, track features, categories."""
    out = {}
    for split in SPLITS:
        shards = sorted((root / "sessions" / split).glob("*.parquet"))
        table = pa.concat_tables([PREPARED_SESSION_SCHEMA.empty_table()] + [from_shard_table(pq.read_table(s)) for s in shards])
        table = table.take(pc.sort_indices(table, [("session_id", "ascending")]))
        digest = hashlib.blake2b(digest_size=12)
        for name in PREPARED_SESSION_SCHEMA.names:
            _update(digest, table.column(name))
        out[split] = f"{table.num_rows}:{digest.hexdigest()}"
    vocab = pq.read_table(root / "vocab.parquet")
    digest = hashlib.blake2b(digest_size=12)
    for name in vocab.column_names:
        _update(digest, vocab.column(name))
    out["vocab"] = f"{vocab.num_rows}:{digest.hexdigest()}"
    features = np.load(root / "track_features.npy")
    out["track_features"] = hashlib.blake2b(features.tobytes(), digest_size=12).hexdigest()
    categories = json.loads((root / "categories.json").read_text())
    out["categories"] = hashlib.blake2b(json.dumps(categories).encode(), digest_size=12).hexdigest()
    return out
