"""Load a training configuration from JSON or YAML, and apply `key=value` overrides.

A config is either a flat mapping of config fields (``{"lr": 1e-3,
"hidden_size": 256}``, JSON or YAML), a search result as written to
``best_configs/*.json`` (``{"task": "skip", "model": "lstm", "config": {...},
...}``), or a checkpoint directory (its ``trainer.json``, e.g. a search's
``best/<model>/``); the last two also say which task and model they belong to.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A configuration file or override is malformed; the message says where."""


def load_config_file(path: str | Path) -> tuple[dict, str | None, str | None]:
    """(config, task, model) from a JSON or YAML file or a checkpoint directory; task/model are None
    for a flat mapping."""
    path = Path(path)
    if path.is_dir():
        from models.checkpoint import CheckpointError, read_state

        try:
            state = read_state(path)
        except CheckpointError as error:
            raise ConfigError(str(error)) from None
        return {k: _coerce(v) for k, v in state["config"].items()}, state["task"], state["model"]
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; give a JSON or YAML config, or a checkpoint directory") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
    if isinstance(data.get("config"), dict):
        return {k: _coerce(v) for k, v in data["config"].items()}, data.get("task"), data.get("model")
    return {k: _coerce(v) for k, v in data.items()}, None, None


def _coerce(value):
    """YAML 1.1 reads `1e-3` (no dot) as a string; such numbers are common in configs."""
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def parse_overrides(items: list[str]) -> dict:
    """`["lr=1e-3", "use_context=true"]` -> {"lr": 0.001, "use_context": True} (values read as YAML scalars)."""
    overrides = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set lr=1e-3")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        overrides[key.strip()] = _coerce(parsed)
    return overrides
