"""What every trainer's checkpoint directory holds, and how it is read back safely.

One layout for every model family (the supervised trainer, DDPG, GBDT):

- ``trainer.json``: plain JSON: ``task``, ``model`` (the family name, which
  says which trainer restores it), ``config``, ``protocol``, ``seed``,
  ``epoch``, ``data_dir``, ``data_fingerprint`` and what the family adds;
- weights in files that hold only tensors and plain data, loaded with
  ``torch.load(weights_only=True)`` (or a format with no code in it, such
  as LightGBM's text model): a checkpoint someone sends you cannot run code
  on your machine when ``tuning.predict`` loads it;
- the prepared dataset's small files (``DATA_FILES``) a model needs to encode
  new raw sessions: vocabulary, categories, track-feature table, manifest,
  with their SHA-256 in ``trainer.json`` (a file from another dataset is refused).

``save_trainer_state`` writes the shared part (data files and ``trainer.json``)
for any trainer of ``tuning.trainer.TrainerProtocol``, and ``rebuild_trainer``
is the shared ``restore``: it checks the directory and calls the trainer's
constructor with ``_restore_from``. Errors name the file and say what is wrong
(``CheckpointError``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from data_pipeline.dataset import is_uri

STATE_FILE = "trainer.json"
WEIGHTS_FILE = "checkpoint.pt"
# What a checkpoint copies from the prepared directory, so that it can encode new raw data alone.
DATA_FILES = ("manifest.json", "vocab.parquet", "categories.json", "track_features.npy")
STATE_KEYS = ("task", "model", "config", "protocol", "epoch")


class CheckpointError(ValueError):
    """A checkpoint directory or file that cannot be used; the message names it and says why."""


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; errors name the choices."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}: choose cpu, cuda or auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(device)


def write_state(directory: Path, state: dict) -> None:
    """Write ``trainer.json``, recording the SHA-256 of each data file already in `directory`."""
    directory = Path(directory)
    hashes = {name: _sha256(directory / name) for name in DATA_FILES if (directory / name).is_file()}
    (directory / STATE_FILE).write_text(json.dumps({**state, "data_files": hashes}, indent=2))


def read_state(directory: str | Path) -> dict:
    """``trainer.json`` of a checkpoint directory, checked for the keys every trainer writes."""
    directory = Path(directory)
    path = directory / STATE_FILE
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    if not path.is_file():
        hint = ""
        if (directory / "trainer" / STATE_FILE).is_file():
            hint = f" (a Tune trial checkpoint: give {directory / 'trainer'})"
        raise CheckpointError(
            f"{directory}: not a checkpoint directory, it has no {STATE_FILE}{hint}; checkpoints are written by "
            "tuning.train, and tuning.search keeps each family's best in <experiment>/best/<model>"
        )
    try:
        state = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: missing {', '.join(missing)}; was it written by this project?")
    if not isinstance(state["config"], dict):
        raise CheckpointError(f"{path}: 'config' must be a mapping of config fields")
    for name, digest in (state.get("data_files") or {}).items():
        if name not in DATA_FILES:
            continue
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory / name}: missing; copy the checkpoint folder whole")
        if _sha256(directory / name) != digest:
            raise CheckpointError(
                f"{directory / name}: not the file this checkpoint was saved with (another dataset's?); "
                "the model's ids only mean something with its own vocabulary, categories and features"
            )
    return state


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(obj: dict, path: Path) -> None:
    """Write tensors and plain data (numpy arrays become tensors) for `load_weights`."""
    torch.save(_as_tensors(obj), path)


def load_weights(path: str | Path) -> dict:
    """A weights file as plain data: tensors, numbers, strings, lists and dicts, nothing else.

    ``weights_only=True`` makes torch refuse any pickled object that is not one of
    those, so a checkpoint from elsewhere cannot run code when it is loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; the checkpoint directory is incomplete")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - truncated, foreign or malicious files all end here
        text = str(error).strip()
        reason = text.splitlines()[0] if text else type(error).__name__
        raise CheckpointError(
            f"{path}: not a checkpoint this project wrote, or damaged ({reason}); "
            "only tensors and plain data are loaded from checkpoints"
        ) from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: expected a dict of weights, found {type(saved).__name__}")
    return saved


def load_array(path: str | Path) -> np.ndarray:
    """A ``.npy`` file of numbers (never pickled objects), with errors that name it."""
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise CheckpointError(f"{path}: not a readable array file ({error})") from None
    if not np.issubdtype(array.dtype, np.number):
        raise CheckpointError(f"{path}: holds {array.dtype}, expected numbers")
    return array


def _as_tensors(value):
    """Numpy arrays as tensors (recursively through dicts and lists); everything else unchanged."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, dict):
        return {k: _as_tensors(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_as_tensors(v) for v in value)
    return value


def copy_data_files(source, directory: Path) -> None:
    """Copy the prepared dataset's DATA_FILES into a checkpoint directory.

    `source`: a PreparedDataset (local or at a URI) or a checkpoint directory that
    already holds them (a restored trainer saving again).
    """
    for name in DATA_FILES:
        target = Path(directory) / name
        if isinstance(source, Path):
            if (source / name).resolve() != target.resolve():
                shutil.copyfile(source / name, target)
        elif source.is_uri:
            target.write_bytes(source.read_bytes(name))
        elif (Path(source.root) / name).resolve() != target.resolve():
            shutil.copyfile(Path(source.root) / name, target)


def data_dir_string(data_dir: str | Path | None) -> str | None:
    """How a checkpoint records its data directory: an absolute path, or the URI as given."""
    if data_dir is None:
        return None
    return data_dir if is_uri(data_dir) else str(Path(data_dir).resolve())


def saved_data_dir(state: dict) -> str | None:
    """The prepared dataset a checkpoint was trained on, when its manifest is still there (else None)."""
    saved = state.get("data_dir")
    if not saved:
        return None
    if not is_uri(saved):
        return saved if Path(saved, "manifest.json").exists() else None
    import pyarrow as pa
    from pyarrow import fs as pafs

    try:
        filesystem, base = pafs.FileSystem.from_uri(saved)
        found = filesystem.get_file_info(f"{base.rstrip('/')}/manifest.json").type == pafs.FileType.File
    except (pa.ArrowException, OSError, ValueError):
        return None
    return saved if found else None


def save_trainer_state(directory: Path, trainer, data_source, data_dir, fingerprint: str, **extra) -> None:
    """The part of a checkpoint every trainer writes alike: the data files, then ``trainer.json``.

    `trainer` meets ``tuning.trainer.TrainerProtocol``; `data_source` is what
    ``copy_data_files`` copies from; `extra` adds the family's own keys.
    """
    copy_data_files(data_source, directory)
    write_state(directory, {
        "task": trainer.task,
        "model": trainer.model_name,
        "config": trainer.config_dict(),
        "protocol": trainer.protocol,
        "seed": trainer.seed,
        "input_path": trainer.input_path,
        "epoch": trainer.epoch,
        "data_dir": data_dir_string(data_dir),
        "data_fingerprint": fingerprint,
        "num_parameters": trainer.num_parameters,
        **extra,
    })


def rebuild_trainer(cls, directory: str | Path, data_dir, device: str, files: tuple[str, ...]):
    """A trainer of class `cls` from its checkpoint `directory` (the shared body of every ``restore``).

    Checks ``trainer.json`` and that `files` (the family's weights) and the data
    files are there; `data_dir` "saved" becomes the dataset it was trained on
    when it still exists (else None: prediction only). A config the trainer
    rejects becomes a CheckpointError naming ``trainer.json``.
    """
    directory = Path(directory)
    state = read_state(directory)
    missing = [name for name in (*files, *DATA_FILES) if not (directory / name).is_file()]
    if missing:
        raise CheckpointError(f"{directory}: incomplete checkpoint, missing {', '.join(missing)}")
    if data_dir == "saved":
        data_dir = saved_data_dir(state)
    try:
        return cls(
            state["task"], state["model"], state["config"], data_dir, protocol=state["protocol"], device=device,
            seed=int(state.get("seed", 0)), input_path=state.get("input_path", "memory"), _restore_from=directory,
        )
    except (TypeError, ValueError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{directory / STATE_FILE}: {error}") from None
