"""Tune stoppers of the search (kept apart so that `tuning.search` imports Ray only when it runs)."""

from __future__ import annotations

from ray.tune.stopper import Stopper


class TrialEpochBudget(Stopper):
    """Ends the search once its trials have reported `budget` epochs in all (``--max-trial-epochs``).

    Trials still running when the budget is reached are stopped too, so a search
    may overshoot by at most one epoch per running trial. The count starts afresh
    after ``--resume``.
    """

    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0
        self._epochs: dict[str, int] = {}

    def __call__(self, trial_id: str, result: dict) -> bool:
        # Count epochs, not calls: Tune calls stoppers again with a finished trial's last result.
        epoch = int(result.get("epoch", 0))
        if epoch > self._epochs.get(trial_id, 0):
            self.used += epoch - self._epochs.get(trial_id, 0)
            self._epochs[trial_id] = epoch
        return False

    def stop_all(self) -> bool:
        return self.used >= self.budget
