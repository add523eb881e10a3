"""The two tasks and what each one predicts: the contract between a batch and every model.

A task batch (``data_pipeline.dataset``) holds both halves of each session;
a task names the second-half column a model predicts:

- ``skip``: ``out_skip_2``, whether each second-half track was skipped
  (1 = skipped), given the first half and the second half's track ids;
- ``seq``: ``out_tracks``, the second half's track ids, given the first half.
"""

from __future__ import annotations

TASKS = ("skip", "seq")
LABELS = {"skip": "out_skip_2", "seq": "out_tracks"}


def check_task(task: str, who: str = "") -> str:
    """`task`, or a ValueError that names the two tasks (and `who` asked)."""
    if task not in TASKS:
        prefix = f"{who}: " if who else ""
        raise ValueError(f"{prefix}unknown task {task!r}: choose one of {', '.join(TASKS)}")
    return task


def label_key(task: str) -> str:
    """The batch key `task` predicts."""
    return LABELS[check_task(task)]
