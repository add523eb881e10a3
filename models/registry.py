"""The model registry: name -> config class, builder, tasks, search space, paper configs.

Adding a model is adding a file (a config dataclass, ``build``,
``SEARCH_SPACE``, ``PAPER_CONFIGS`` and optionally ``pretrain``,
``START_OVERRIDES``, ``SMALL_SETTINGS`` and ``SMALL_TASK_SETTINGS``) and one line in ``MODELS``; the
search, ``tuning.train`` and ``tuning.predict`` then know it
(``tuning/families.py``).

Search spaces are plain data (no Ray here), one entry per config field:
``("choice", [values])``, ``("uniform", low, high)``, ``("loguniform", low,
high)``, ``("randint", low, high)`` (high exclusive). ``paper_configs[task]``
is the paper's best configuration (the searcher's first points to evaluate);
its keys are search-space keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from data_pipeline.tasks import TASKS
from models import bert, bert_fused, bigru, lstm, lstm_w2v, transformer
from models.config import COMMON_PAPER_VALUES, COMMON_SEARCH_SPACE, CommonConfig
from models.data import DataInfo

SEARCH_SPACE_KINDS = ("choice", "uniform", "loguniform", "randint")


@dataclass(frozen=True)
class ModelSpec:
    """Everything the trainer and the search need to know about one model family."""

    name: str
    config_cls: type[CommonConfig]
    build: Callable[[CommonConfig, str, DataInfo], nn.Module]  # (config, task, info) -> model
    tasks: tuple[str, ...]
    search_space: dict[str, tuple]
    paper_configs: dict[str, dict[str, Any]]  # task -> the paper's best config
    # (config, dataset, cache_dir) -> dict merged into DataInfo.pretrained; cached on disk
    pretrain: Callable[[CommonConfig, Any, Path], dict] | None = None
    # task -> fields the search's first point sets on top of the paper's configuration (see tuning.families)
    start_overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # fields a laptop-sized search (--budget small) pins when the family does not search them
    small_settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    # task -> fields it pins on top of small_settings for that task
    small_task_settings: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def make_config(self, values: dict[str, Any] | None = None, task: str | None = None) -> CommonConfig:
        """The config from `values` (unknown keys are an error), on top of the paper's config for
        `task` when given, on top of the defaults."""
        merged = dict(self.paper_configs.get(task, {})) if task else {}
        merged.update(values or {})
        known = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(
                f"model {self.name!r}: unknown config field(s) {', '.join(unknown)}; "
                f"{self.config_cls.__name__} has {', '.join(sorted(known))}"
            )
        return self.config_cls(**merged)


def _spec(name: str, module, config_cls, pretrain=None) -> ModelSpec:
    """A family's spec: its own space and paper configs plus the options every family has
    (models.config.COMMON_SEARCH_SPACE: context, track dropout, loss position weights)."""
    space = {**module.SEARCH_SPACE, **COMMON_SEARCH_SPACE}
    paper = {task: {**COMMON_PAPER_VALUES, **config} for task, config in module.PAPER_CONFIGS.items()}
    return ModelSpec(
        name, config_cls, module.build, TASKS, space, paper, pretrain,
        start_overrides=getattr(module, "START_OVERRIDES", {}), small_settings=getattr(module, "SMALL_SETTINGS", {}),
        small_task_settings=getattr(module, "SMALL_TASK_SETTINGS", {}),
    )


MODELS: dict[str, ModelSpec] = {
    "lstm": _spec("lstm", lstm, lstm.LSTMConfig),
    "lstm_w2v": _spec("lstm_w2v", lstm_w2v, lstm_w2v.LSTMWord2VecConfig, lstm_w2v.pretrain),
    "bigru": _spec("bigru", bigru, bigru.BiGRUConfig, bigru.pretrain),
    "transformer": _spec("transformer", transformer, transformer.TransformerConfig),
    "bert": _spec("bert", bert, bert.BertConfig, bert.pretrain),
    "bert_fused": _spec("bert_fused", bert_fused, bert_fused.BertFusedConfig, bert_fused.pretrain),
}


def get_model(name: str) -> ModelSpec:
    """The registered model called `name`; a ValueError lists the known names otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}: known models are {', '.join(MODELS)}") from None


def config_to_dict(config: CommonConfig) -> dict[str, Any]:
    """A config as plain data (for checkpoints and results); `ModelSpec.make_config` reverses it."""
    return dataclasses.asdict(config)
