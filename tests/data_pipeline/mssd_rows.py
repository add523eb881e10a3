"""Tiny hand-written MSSD files for the data-pipeline tests."""

from __future__ import annotations

import gzip
from pathlib import Path

from data_pipeline.schema import LOG_COLUMNS, TRACK_FEATURE_COLUMNS

HEADER = list(LOG_COLUMNS)


def session_rows(
    session_id: str,
    length: int,
    positions: list[int] | None = None,
    tracks: list[str] | None = None,
    skip_2: list[int] | None = None,
    date: str = "2018-07-15",
    declared_length: int | None = None,
    true: str = "true",
    false: str = "false",
) -> list[dict]:
    """Rows of one session: positions 1..length unless given; track ids t_<p> unless given."""
    positions = positions if positions is not None else list(range(1, length + 1))
    rows = []
    for i, p in enumerate(positions):
        skipped = (skip_2[p - 1] if skip_2 else p % 2) == 1
        rows.append({
            "session_id": session_id,
            "session_position": str(p),
            "session_length": str(declared_length if declared_length is not None else length),
            "track_id_clean": tracks[p - 1] if tracks else f"t_{p}",
            "skip_1": true if skipped else false,
            "skip_2": true if skipped else false,
            "skip_3": true if skipped else false,
            "not_skipped": false if skipped else true,
            "context_switch": "0",
            "no_pause_before_play": "1",
            "short_pause_before_play": "0",
            "long_pause_before_play": "0",
            "hist_user_behavior_n_seekfwd": str(p % 3),
            "hist_user_behavior_n_seekback": "0",
            "hist_user_behavior_is_shuffle": false,
            "hour_of_day": "16",
            "date": date,
            "premium": true,
            "context_type": "editorial_playlist",
            "hist_user_behavior_reason_start": "fwdbtn" if p > 1 else "clickrow",
            "hist_user_behavior_reason_end": "fwdbtn" if skipped else "trackdone",
        })
    return rows


def write_log(path: Path, rows: list[dict], header: list[str] | None = None) -> Path:
    """Write rows as CSV (gzipped when the name ends in .gz)."""
    header = header or HEADER
    lines = [",".join(header)] + [",".join(row.get(c, "") for c in header) for row in rows]
    text = "\n".join(lines) + "\n"
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def feature_row(track_id: str, seed: int) -> dict:
    values = {name: str(0.1 * ((seed * 7 + i) % 13)) for i, name in enumerate(TRACK_FEATURE_COLUMNS)}
    values["track_id"] = track_id
    values["mode"] = "major" if seed % 2 else "minor"
    return values


def write_features(path: Path, rows: list[dict]) -> Path:
    header = list(TRACK_FEATURE_COLUMNS)
    lines = [",".join(header)] + [",".join(row.get(c, "") for c in header) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path
