"""What a search prints while it runs: one line per trial event, and how far the search has got.

``TrialEvents`` is a Tune callback. Each line starts with the trials done so far
out of the total (a progress bar in text, so a log file reads as well as a
terminal) and names the trial as ``<family> #<number>`` (its number in the
family's Optuna study), marked when it is the family's start or paper
configuration:

    [ 3/21] lstm #1 (paper config) started: lr=1e-05 batch_size=256 hidden_size=128 ...
    [ 3/21] lstm #1 (paper config) epoch 1/3: val MAA 0.4120
    [ 4/21] lstm #1 (paper config) stopped early after epoch 1: best val MAA 0.4120, 7 s
    [ 7/21] bert #2 failed (InjectedFailure: ...); retrying from its last checkpoint
    [ 9/21] bert #0 (start config) finished: best val MAA 0.6191 at epoch 3, 14 s

On a terminal a tqdm bar of trials done stays under the lines. Every
``refresh_s`` seconds of results, and when the search ends, it calls
``on_refresh`` (the search rewrites report.html there).
"""

from __future__ import annotations

import sys
import time
from typing import Callable

from ray.tune import Callback

from tuning.spaces import POINT_ATTR

MAX_PARAMS_SHOWN = 8


def short_params(values: dict, limit: int = MAX_PARAMS_SHOWN) -> str:
    """``k=v`` pairs, floats in 3 significant digits, at most `limit` of them."""
    items = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()]
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return " ".join(items[:limit]) + more


def trial_label(config: dict, trial_id: str) -> str:
    marks = {"paper": " (paper config)", "start": " (start config)", "points": " (--points)"}
    number = config.get("trial")
    return f"{config.get('model', 'trial')}{f' #{number}' if number is not None else ' ' + trial_id}" + marks.get(
        config.get(POINT_ATTR), ""
    )


class TrialEvents(Callback):
    """One console line per trial event (see the module docstring)."""

    def __init__(self, total: int, max_epochs: int, on_refresh: Callable[[], None] | None = None,
                 refresh_s: float = 30.0):
        # Tune pickles its callbacks with the experiment (and unpickles them on --resume): everything
        # here is plain data or a picklable callable; the terminal bar is made when first needed.
        self.total = total
        self.max_epochs = max_epochs
        self.on_refresh = on_refresh
        self.refresh_s = refresh_s
        self.done = 0
        self.best: dict[str, tuple[float, int]] = {}  # trial id -> (best val MAA, its epoch)
        self._last_refresh = time.monotonic()
        self._bar = None

    def __getstate__(self):
        return {**self.__dict__, "_bar": None}

    def say(self, text: str) -> None:
        line = f"[{self.done:>{len(str(self.total))}}/{self.total}] {text}"
        if self._bar is None and sys.stdout.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.done, unit="trial", desc="trials", file=sys.stderr,
                             dynamic_ncols=True, leave=False)
        if self._bar is not None:
            self._bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def _count(self, trials, ending=None) -> None:
        """Trials done so far, counted from Tune's own list (right after a --resume too); `ending` is done too."""
        done = sum(t.status in ("TERMINATED", "ERROR") or t is ending for t in trials)
        if self._bar is not None and done > self.done:
            self._bar.update(done - self.done)
        self.done = done

    def _refresh(self, force: bool = False) -> None:
        if self.on_refresh is None:
            return
        now = time.monotonic()
        if force or now - self._last_refresh >= self.refresh_s:
            self._last_refresh = now
            self.on_refresh()

    # -- Tune's callback API ------------------------------------------------------------------

    def on_trial_start(self, iteration, trials, trial, **info):
        self._count(trials)
        family = trial.config.get("model")
        params = trial.config.get(family, {}) if family else {}
        self.say(f"{trial_label(trial.config, trial.trial_id)} started: {short_params(params)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "val_maa" not in result:
            return
        value, epoch = float(result["val_maa"]), int(result.get("epoch", 0))
        if trial.trial_id not in self.best or value > self.best[trial.trial_id][0]:
            self.best[trial.trial_id] = (value, epoch)
        extra = ""
        if "val_recall_at_10" in result:
            extra = f", Recall@10 {result['val_recall_at_10']:.4f}"
        self.say(f"{trial_label(trial.config, trial.trial_id)} epoch {epoch}/{self.max_epochs}: "
                 f"val MAA {value:.4f}{extra}")
        self._refresh()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._count(trials, trial)
        last = trial.last_result or {}
        epoch = int(last.get("epoch", 0))
        best = self.best.get(trial.trial_id)
        seconds = float(last.get("time_total_s", 0.0))
        label = trial_label(trial.config, trial.trial_id)
        if best is None:
            self.say(f"{label} ended without a result")
        elif epoch >= self.max_epochs:
            self.say(f"{label} finished: best val MAA {best[0]:.4f} at epoch {best[1]}, {seconds:.0f} s")
        else:
            self.say(f"{label} stopped early after epoch {epoch}: best val MAA {best[0]:.4f}, {seconds:.0f} s")
        self._refresh()

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.say(f"{trial_label(trial.config, trial.trial_id)} failed ({_error_of(trial)}); "
                 "retrying from its last checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._count(trials, trial)
        self.say(f"{trial_label(trial.config, trial.trial_id)} failed for good: {_error_of(trial)}")
        self._refresh()

    def on_experiment_end(self, trials, **info):
        if self._bar is not None:
            self._bar.close()
        self._refresh(force=True)


def _error_of(trial) -> str:
    """The last line of a trial's error, as Tune recorded it."""
    from pathlib import Path

    try:
        path = Path(trial.path) / "error.txt"
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1].strip() if lines else "no error message"
    except OSError:
        return "see the trial's error.txt"
