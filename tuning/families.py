"""Every searchable model family in one registry: the paper's six sequence models, DDPG and a GBDT peer alike.

A `Family` is what the search, the trial, ``tuning.train`` and ``tuning.predict``
need to know about one model family, and nothing is special-cased by a family's
name anywhere else:

- ``trainer``: the class that trains it, meeting ``tuning.trainer.TrainerProtocol``
  (``tuning.trainer.Trainer`` for the sequence models of ``models/``,
  ``rl.trainer.RLTrainer`` for DDPG, ``models.gbdt.GBDTTrainer`` for the
  gradient-boosted peer), imported only when used;
- ``config_cls``: the dataclass of its hyperparameters; a field's name is the
  name in the search space, in Tune's results and in ``--fix``/``--set``;
  ``options_cls``, the trainer's own knobs that ``--fix`` may pin too;
- ``search_space`` (plain data, see ``tuning.spaces``), ``paper_configs[task]``
  (the paper's configuration, run as its own marked trial) and
  ``start_configs[task]`` (the search's first point: the paper's architecture
  with settings that learn within the small budget's few epochs);
- ``small_settings``: fields it does not search that ``--budget small`` pins
  (e.g. a small BERT pre-trained briefly), and ``small_task_settings[task]``
  on top of them for one task (e.g. that BERT pre-trained longer for seq);
- ``local_data_only`` (it reads the prepared data as a local path only) and
  ``uses_gpu`` (whether its trials ask for ``--gpus-per-trial``).

Adding a family is a model file (see ``models/registry.py``) or a trainer plus
one entry here.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_pipeline.tasks import TASKS

# The small budget's first point learns within a few epochs: the paper's learning rates
# (1e-5 skip, 1e-4 seq) need far more (measured on the embedded synthetic set, 3 epochs:
# skip lr 1e-3 reaches 0.59-0.62 val MAA against 0.53 for lr 1e-5; seq lr 1e-2 reaches
# 0.22-0.23 against 0.11 for lr 1e-3).
START_LR = {"skip": 3e-3, "seq": 1e-2}


class UnknownFamily(ValueError):
    """A model name that is not in the registry, or a family that does not support a task."""


@dataclass(frozen=True)
class Family:
    """One searchable model family (see the module docstring)."""

    name: str
    tasks: tuple[str, ...]
    trainer_path: str  # "module:Class" of its trainer, imported on first use
    config_cls: type
    search_space: dict[str, tuple]
    paper_configs: dict[str, dict[str, Any]]
    start_configs: dict[str, dict[str, Any]]
    small_settings: dict[str, Any] = field(default_factory=dict)
    small_task_settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> on top of small_settings
    options_cls: type | None = None
    local_data_only: bool = False
    uses_gpu: bool = True

    @property
    def trainer(self):
        module, _, name = self.trainer_path.partition(":")
        return getattr(importlib.import_module(module), name)

    @property
    def config_fields(self) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(self.config_cls))

    @property
    def fields(self) -> frozenset[str]:
        """Everything a trial config may set: config fields and trainer options."""
        options = frozenset(f.name for f in dataclasses.fields(self.options_cls)) if self.options_cls else frozenset()
        return self.config_fields | options


def _supervised_families() -> dict[str, Family]:
    from models.registry import MODELS
    from tuning.trainer import TrainerOptions

    families = {}
    for name, spec in MODELS.items():
        start = {
            task: {**config, "lr": START_LR[task], **spec.start_overrides.get(task, {})}
            for task, config in spec.paper_configs.items()
        }
        families[name] = Family(
            name=name,
            tasks=tuple(spec.tasks),
            trainer_path="tuning.trainer:Trainer",
            config_cls=spec.config_cls,
            search_space=dict(spec.search_space),
            paper_configs=dict(spec.paper_configs),
            start_configs=start,
            small_settings=dict(spec.small_settings),
            small_task_settings={task: dict(values) for task, values in spec.small_task_settings.items()},
            options_cls=TrainerOptions,
        )
    return families


def _ddpg_family() -> Family:
    from rl import spec

    return Family(
        name=spec.NAME,
        tasks=TASKS,
        trainer_path="rl.trainer:RLTrainer",
        config_cls=spec.DDPGModelConfig,
        search_space=dict(spec.SEARCH_SPACE),
        paper_configs=dict(spec.PAPER_CONFIGS),
        start_configs=dict(spec.START_CONFIGS),
        small_settings=dict(spec.SMALL_SETTINGS),
        # the environment reads the prepared split as local numpy arrays (rl/env.py)
        local_data_only=True,
    )


def _gbdt_family() -> Family:
    from models import gbdt

    return Family(
        name="gbdt",
        tasks=("skip",),
        trainer_path="models.gbdt:GBDTTrainer",
        config_cls=gbdt.GBDTConfig,
        search_space=dict(gbdt.SEARCH_SPACE),
        paper_configs=dict(gbdt.PAPER_CONFIGS),
        start_configs=dict(gbdt.START_CONFIGS),
        uses_gpu=False,  # LightGBM on the trial's CPUs
    )


def _registry() -> dict[str, Family]:
    families = _supervised_families()
    for family in (_ddpg_family(), _gbdt_family()):
        families[family.name] = family
    return families


FAMILIES: dict[str, Family] = _registry()


def get_family(name: str) -> Family:
    """The family called `name`; an UnknownFamily error lists the known names otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownFamily(f"unknown model {name!r}: choose one of {', '.join(FAMILIES)}") from None


def families_for(task: str, model: str = "all", registry: dict[str, Family] | None = None) -> list[Family]:
    """The families a search covers: ``all`` that support `task`, or a comma-separated list of names."""
    registry = FAMILIES if registry is None else registry
    if task not in TASKS:
        raise UnknownFamily(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    if model == "all":
        chosen = [f for f in registry.values() if task in f.tasks]
        if not chosen:
            raise UnknownFamily(f"no model supports task {task!r}")
        return chosen
    chosen = []
    for name in (n.strip() for n in model.split(",")):
        if name not in registry:
            raise UnknownFamily(f"unknown model {name!r}: choose one of {', '.join(registry)} or all")
        family = registry[name]
        if task not in family.tasks:
            raise UnknownFamily(f"model {name!r} does not support task {task!r} (it supports {', '.join(family.tasks)})")
        if family not in chosen:
            chosen.append(family)
    return chosen


def make_trainer(task: str, model: str, config: dict, data_dir, **kwargs):
    """A new trainer of family `model` for one configuration (kwargs: protocol, device, seed, input_path, cache_dir)."""
    family = get_family(model)
    if task not in family.tasks:
        raise UnknownFamily(f"model {model!r} does not support task {task!r} (it supports {', '.join(family.tasks)})")
    return family.trainer(task=task, model=model, config=config, data_dir=data_dir, **kwargs)


def restore_trainer(directory: str | Path, data_dir: Any = "saved", device: str = "auto"):
    """The trainer saved in checkpoint `directory`, whatever its family (read from its ``trainer.json``).

    `data_dir` as in the trainers' ``restore``: "saved" (the dataset it was trained
    on, when it still exists), a prepared directory, or None (prediction only).
    """
    from models.checkpoint import CheckpointError, read_state

    state = read_state(directory)
    try:
        family = get_family(str(state["model"]))
    except UnknownFamily as error:
        raise CheckpointError(f"{Path(directory) / 'trainer.json'}: {error}") from None
    try:
        return family.trainer.restore(directory, data_dir=data_dir, device=device)
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever a damaged or foreign checkpoint makes the trainer raise
        text = str(error).strip()
        reason = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
        raise CheckpointError(f"{directory}: cannot restore this {family.name} checkpoint ({reason})") from None
