"""Where an experiment lives: a local or shared folder, or a URI (s3://, gs://, file://) read through pyarrow.fs.

An experiment is the folder ``<storage>/<name>``. Tune writes its trials there;
the driver writes its own files (``search.json``, ``baselines.json``, test
results, ``best/``, the report) into a local folder: the experiment folder
itself for a local storage, or ``./experiments/<name>`` for a URI, copied up
beside the trials when the search ends (``copy_up``) and down by whoever
reads it (``copy_down``).

Credentials never reach a file or the console: ``mask_url`` hides the password
of a database URL (``--optuna-storage``).
"""

from __future__ import annotations

import json
from pathlib import Path

from tuning.options import DEFAULT_STORAGE, UsageError

SEARCH_FILE = "search.json"  # the search's options, families and data (what --resume reads back)
BASELINES_FILE = "baselines.json"
TEST_DIR = "test_results"
BEST_DIR = "best"
OPTUNA_FILE = "optuna.db"
MASK = "***"


def is_uri(path) -> bool:
    return isinstance(path, str) and "://" in path


def mask_url(url: str) -> str:
    """`url` with its password replaced by ***, for files and the console (SQLAlchemy URLs and others)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: mask anything between ':' and '@' after the scheme
        scheme, sep, rest = url.partition("://")
        if not sep or "@" not in rest:
            return url
        credentials, at, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:{MASK}@{host}" if ":" in credentials else url


def has_masked_password(url: str | None) -> bool:
    return bool(url) and f":{MASK}@" in url


_REAL_URLS: dict[str, str] = {}  # masked URL -> URL, filled by the driver; lives in memory only


def remember_url(url: str) -> None:
    """Let objects that hold only the masked form of `url` (pickled into Tune's state) reach it."""
    _REAL_URLS[mask_url(url)] = url


def unmask_url(url: str) -> str:
    """The URL behind a masked one (see `remember_url`); a URL without a hidden password as it is."""
    if not has_masked_password(url):
        return url
    if url not in _REAL_URLS:
        raise UsageError(f"{url}: its password is never saved; give --optuna-storage again")
    return _REAL_URLS[url]


def experiment_root(storage: str | None) -> str:
    """The storage root as Tune wants it: an absolute path or a URI."""
    if storage and is_uri(storage):
        return storage.rstrip("/")
    return str(Path(storage or DEFAULT_STORAGE).expanduser().resolve())


def local_experiment_dir(root: str, name: str) -> Path:
    """Where the driver writes the experiment's own files: in the storage, or ./experiments/<name> for a URI."""
    return Path(root) / name if not is_uri(root) else Path(DEFAULT_STORAGE).resolve() / name


def read_text_at(uri: str) -> str | None:
    """The text of the file at `uri`, or None when there is none."""
    from pyarrow import fs as pafs

    filesystem, path = pafs.FileSystem.from_uri(uri)
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        return None
    with filesystem.open_input_stream(path) as stream:
        return stream.read().decode()


def list_dirs_at(uri: str) -> list[str]:
    """Names of the folders directly under `uri` (none when it does not exist)."""
    from pyarrow import fs as pafs

    filesystem, path = pafs.FileSystem.from_uri(uri)
    infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(info.base_name for info in infos if info.type == pafs.FileType.Directory)


def copy_down(uri: str, local_dir: str | Path, only: tuple[str, ...] | None = None, checkpoints: bool = False) -> Path:
    """Copy the experiment folder at `uri` into `local_dir`; returns `local_dir`, absolute.

    Files there with the same names are replaced. Trial checkpoints (``checkpoint_*``
    folders) stay at the URI unless `checkpoints`; `only` limits the copy to those
    top-level names (files or folders).
    """
    from pyarrow import fs as pafs

    local_dir = Path(local_dir).resolve()
    filesystem, base = pafs.FileSystem.from_uri(uri)
    base = base.rstrip("/")
    if filesystem.get_file_info(base).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"{uri}: no such experiment folder")
    local_dir.mkdir(parents=True, exist_ok=True)
    for info in filesystem.get_file_info(pafs.FileSelector(base, recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        relative = info.path[len(base):].lstrip("/")
        parts = relative.split("/")
        if only is not None and parts[0] not in only:
            continue
        if not checkpoints and any(part.startswith("checkpoint_") for part in parts[:-1]):
            continue
        target = local_dir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with filesystem.open_input_stream(info.path) as stream:
            target.write_bytes(stream.read())
    return local_dir


def copy_up(local: str | Path, uri: str) -> None:
    """Copy a local file or folder to `uri` (a folder's content goes under it)."""
    from pyarrow import fs as pafs

    filesystem, path = pafs.FileSystem.from_uri(uri)
    local = Path(local).resolve()
    if local.is_dir():
        filesystem.create_dir(path, recursive=True)
    else:
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=filesystem)


def read_search_meta(root: str, name: str) -> tuple[str, dict | None]:
    """(where search.json is, its content or None when absent) for experiment `name` under `root`."""
    if is_uri(root):
        where = f"{root}/{name}/{SEARCH_FILE}"
        try:
            text = read_text_at(where)
        except (OSError, ValueError) as error:
            raise UsageError(f"--storage {root}: cannot read {where} ({error})") from None
        return where, json.loads(text) if text is not None else None
    path = Path(root) / name / SEARCH_FILE
    return str(path), json.loads(path.read_text()) if path.exists() else None


def latest_experiment(root: str, task: str) -> str | None:
    """The most recently started experiment of `task` under `root` (a path or a URI), for a bare --resume."""
    if is_uri(root):
        try:
            names = list_dirs_at(root)
        except (OSError, ValueError) as error:
            raise UsageError(f"--storage {root}: cannot list it ({error})") from None
        metas = ((name, lambda name=name: read_text_at(f"{root}/{name}/{SEARCH_FILE}")) for name in names)
    else:
        metas = ((m.parent.name, m.read_text) for m in Path(root).glob(f"*/{SEARCH_FILE}"))
    candidates = []
    for name, read in metas:
        try:
            saved = json.loads(read() or "{}")
        except (OSError, json.JSONDecodeError):
            continue
        if saved.get("options", {}).get("task") == task:
            candidates.append((saved.get("started", ""), name))
    return max(candidates)[1] if candidates else None
