"""Pre-training results kept on disk: computed once per dataset and parameters, however many trials ask.

Word2vec vectors and the pre-trained BERT are each one step shared by every
trial of a search that uses them. ``cached(path, compute, save, load)`` returns
the file's content when it exists; otherwise it takes an exclusive lock beside
the file (so two trials that start together do not both compute it: the second
waits and loads), computes, and writes through a temporary file renamed into
place (so no reader ever sees half a file). ``cache_key`` names the file by the
dataset's fingerprint and every parameter that shapes the result.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, TypeVar

CACHE_VERSION = 1
T = TypeVar("T")


def cache_key(fingerprint: str, **params) -> str:
    text = json.dumps({"fingerprint": fingerprint, "version": CACHE_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(path: Path, compute: Callable[[], T], save: Callable[[T, Path], None], load: Callable[[Path], T]) -> T:
    """`load(path)` when cached, else `compute()`, saved with `save(value, tmp)` and renamed to `path`."""
    path = Path(path)
    if path.exists():
        return load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if path.exists():  # another process computed it while this one waited
            return load(path)
        value = compute()
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")  # same suffix: np.save keeps the name
        save(value, tmp)
        os.replace(tmp, path)
        return value
