"""Leaderboard, best configs and learning curves of a search: `python -m tuning.report DIR`.

Reads only files, so it works on a finished, running or interrupted experiment
directory (written by tuning.search; Tune's own files plus ours):

- ``search.json``: the search's options and model families;
- ``<model>_<trial id>/``: Tune's trial directories (``params.json``,
  ``result.json`` with one line per epoch, checkpoints, TensorBoard events);
- ``experiment_state-*.json``: Tune's trial statuses, failures and errors;
- ``baselines.json``: the simple baselines on val and test;
- ``test_results/<model>.json``: each family's winner evaluated once on test.

Writes into the same directory:

- ``leaderboard.md`` / ``leaderboard.csv``: one row per model family (its best
  trial, chosen on val MAA) and per baseline: val MAA, test MAA, first-position
  accuracy, accuracy at each position and the histogram of correct predictions
  per session on test (the paper's Tables 3 and 4), epochs, wall time,
  parameters; the markdown also lists every trial with its status;
- ``best_configs/<model>.json``: the winner's configuration, readable by
  ``python -m tuning.train --config``;
- ``learning_curves/<model>.png``: train and val loss and val MAA by epoch of
  each family's best trial (like the paper's Figure 5), and
  ``learning_curves.png``: val MAA by epoch of every trial, by family (shows
  where ASHA stopped trials).

An experiment kept at a URI (``--storage s3://...`` / ``gs://...``) is copied
down first (``copy_down``, through pyarrow.fs) to ``./experiments/<name>``
(or ``--local-dir``), and the report is written there.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tuning.spaces import trial_hyperparameters

SEARCH_FILE = "search.json"  # written by tuning.search: its options and model families
BASELINES_FILE = "baselines.json"
TEST_DIR = "test_results"
LOCAL_EXPERIMENTS = Path("experiments")  # where an experiment kept at a URI is copied down to
POSITIONS = 10
HISTOGRAM_BINS = 11


@dataclass
class Trial:
    """One Tune trial as read from its directory and the experiment state."""

    trial_id: str
    path: Path
    model: str
    config: dict  # the family's hyperparameters (fixed fields included)
    epochs: list[dict]  # one reported result per epoch, in order
    status: str = "unknown"  # finished / stopped early / error / interrupted / pending
    failures: int = 0
    error: str | None = None

    @property
    def best(self) -> dict | None:
        """The epoch with the highest val MAA (first one on ties)."""
        scored = [r for r in self.epochs if _is_number(r.get("val_maa"))]
        return max(scored, key=lambda r: r["val_maa"]) if scored else None

    @property
    def wall_time_s(self) -> float:
        return float(self.epochs[-1].get("time_total_s", 0.0)) if self.epochs else 0.0


@dataclass
class Experiment:
    path: Path
    meta: dict
    trials: list[Trial]
    baselines: list[dict] = field(default_factory=list)
    tests: dict[str, dict] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.meta.get("options", {}).get("task", "?")

    @property
    def max_epochs(self) -> int | None:
        return self.meta.get("options", {}).get("max_epochs")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _read_results(path: Path) -> list[dict]:
    """result.json: one JSON object per line; a torn last line (killed driver) is skipped."""
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    # A retried trial may report an epoch again after restoring: keep the latest report of each.
    by_epoch: dict[int, dict] = {}
    for row in rows:
        by_epoch[int(row.get("epoch", row.get("training_iteration", len(by_epoch) + 1)))] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def _trial_states(exp_dir: Path) -> dict[str, dict]:
    """trial_id -> {status, failures, error_file} from Tune's latest experiment state."""
    # One file per driver session, named by its start time; a resumed run leaves the old one
    # behind (and may touch it again while syncing), so the newest name wins, not the newest mtime.
    states = sorted(exp_dir.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except json.JSONDecodeError:
        return {}
    out = {}
    for trial_json, meta in data.get("trial_data", []):
        trial = json.loads(trial_json) if isinstance(trial_json, str) else trial_json
        meta = json.loads(meta) if isinstance(meta, str) else meta
        out[trial["trial_id"]] = {
            "status": trial.get("status"),
            "failures": int(meta.get("num_failures", 0) or 0),
            "error_file": meta.get("error_filename"),
        }
    return out


def load_experiment(exp_dir: str | Path) -> Experiment:
    """Everything the report needs from an experiment directory (see the module docstring)."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise FileNotFoundError(f"{exp_dir}: no such experiment directory")
    meta_path = exp_dir / SEARCH_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    max_epochs = meta.get("options", {}).get("max_epochs")
    states = _trial_states(exp_dir)
    trials = []
    for params in sorted(exp_dir.glob("*/params.json")):
        trial_dir = params.parent
        config = json.loads(params.read_text())
        family, values = trial_hyperparameters(config)
        epochs = _read_results(trial_dir / "result.json")
        trial_id = epochs[-1]["trial_id"] if epochs and "trial_id" in epochs[-1] else trial_dir.name.rsplit("_", 1)[-1]
        state = states.get(trial_id, {})
        error_file = trial_dir / "error.txt"
        error = error_file.read_text().strip().splitlines()[-1] if error_file.exists() else None
        tune_status = state.get("status")
        reached = int(epochs[-1].get("epoch", 0)) if epochs else 0
        if tune_status == "ERROR":
            status = "error"
        elif tune_status == "TERMINATED":
            status = "finished" if max_epochs is None or reached >= max_epochs else "stopped early"
        elif tune_status == "PENDING" and not epochs:
            status = "pending"
        else:
            status = "interrupted" if epochs or tune_status else "unknown"
        trials.append(
            Trial(trial_id, trial_dir, family, values, epochs, status, state.get("failures", 0), error if status == "error" else None)
        )
    baselines = json.loads((exp_dir / BASELINES_FILE).read_text()) if (exp_dir / BASELINES_FILE).exists() else []
    tests = {p.stem: json.loads(p.read_text()) for p in sorted((exp_dir / TEST_DIR).glob("*.json"))}
    return Experiment(exp_dir, meta, trials, baselines, tests)


# ---------------------------------------------------------------------------
# leaderboard
# ---------------------------------------------------------------------------


def leaderboard(exp: Experiment) -> list[dict]:
    """One row per model family (best trial on val MAA) and per baseline, best val MAA first."""
    rows = []
    families = sorted({t.model for t in exp.trials})
    for family in families:
        trials = [t for t in exp.trials if t.model == family]
        test = exp.tests.get(family)
        if test is not None:
            winner = next((t for t in trials if t.trial_id == test["trial_id"] or t.path.name == test["trial_id"]), None)
        else:
            scored = [t for t in trials if t.best is not None]
            winner = max(scored, key=lambda t: t.best["val_maa"]) if scored else None
        if winner is None:
            continue
        best = winner.best or {}
        epoch = test["epoch"] if test else best.get("epoch")
        chosen = next((r for r in winner.epochs if r.get("epoch") == epoch), best)
        test_metrics = (test or {}).get("test") or {}
        rows.append(
            {
                "model": family,
                "kind": "model",
                "val_maa": chosen.get("val_maa"),
                "test_maa": test_metrics.get("maa"),
                "test_first_accuracy": test_metrics.get("first_accuracy"),
                "test_loss": test_metrics.get("loss"),
                "val_loss": chosen.get("val_loss"),
                "train_loss": chosen.get("train_loss"),
                "accuracy_at": test_metrics.get("accuracy_at"),
                "correct_histogram": test_metrics.get("correct_histogram"),
                "best_epoch": epoch,
                "epochs": len(winner.epochs),
                "wall_time_s": winner.wall_time_s,
                "parameters": chosen.get("num_parameters"),
                "trial_id": winner.trial_id,
                "trials": len(trials),
                "stopped_early": sum(t.status == "stopped early" for t in trials),
                "failed": sum(t.status == "error" for t in trials),
                "search_time_s": sum(t.wall_time_s for t in trials),
                "config": winner.config,
            }
        )
    for baseline in exp.baselines:
        val, test = baseline.get("val") or {}, baseline.get("test") or {}
        rows.append(
            {
                "model": f"baseline: {baseline['name']}",
                "kind": "baseline",
                "val_maa": val.get("maa"),
                "test_maa": test.get("maa"),
                "test_first_accuracy": test.get("first_accuracy"),
                "accuracy_at": test.get("accuracy_at"),
                "correct_histogram": test.get("correct_histogram"),
                "wall_time_s": baseline.get("seconds"),
            }
        )
    rows.sort(key=lambda r: -(r["val_maa"] if _is_number(r.get("val_maa")) else -1.0))
    return rows


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def _percent(value) -> str:
    return f"{100 * value:.1f}" if _is_number(value) else "–"


def leaderboard_markdown(exp: Experiment, rows: list[dict]) -> str:
    options = exp.meta.get("options", {})
    lines = [
        f"# Leaderboard: {exp.task} task, experiment `{exp.path.name}`",
        "",
        f"Selection on val MAA only; test evaluated once per model family (its best trial's best epoch). "
        f"Protocol {options.get('protocol', '?')}, data `{exp.meta.get('data_dir', '?')}`, "
        f"{len(exp.trials)} trials of up to {options.get('max_epochs', '?')} epochs "
        f"({options.get('searcher', '?')} sampler, scheduler {options.get('scheduler', '?')}, budget {options.get('budget', '?')}).",
        "",
        "| rank | model | val MAA | test MAA | test first-position acc. | best epoch / epochs | wall time (s) | parameters | trials (stopped early, failed) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for rank, row in enumerate(rows, 1):
        model = row["kind"] == "model"
        epochs = f"{row.get('best_epoch')} / {row.get('epochs')}" if model else "–"
        trials = f"{row.get('trials')} ({row.get('stopped_early')}, {row.get('failed')})" if model else "–"
        lines.append(
            f"| {rank} | {row['model']} | {_fmt(row.get('val_maa'))} | {_fmt(row.get('test_maa'))} "
            f"| {_fmt(row.get('test_first_accuracy'))} | {epochs} "
            f"| {_fmt(row.get('wall_time_s'), 1)} | {_fmt(row.get('parameters'))} | {trials} |"
        )
    lines += [
        "",
        "## Test accuracy (%) at each position of the predicted half (paper Table 3)",
        "",
        "| model | " + " | ".join(f"T={i}" for i in range(1, POSITIONS + 1)) + " |",
        "|---|" + "---:|" * POSITIONS,
    ]
    for row in rows:
        acc = row.get("accuracy_at") or [None] * POSITIONS
        lines.append(f"| {row['model']} | " + " | ".join(_percent(v) for v in acc) + " |")
    lines += [
        "",
        "## Test sessions (%) by number of correct predictions (paper Table 4)",
        "",
        "| model | " + " | ".join(str(i) for i in range(HISTOGRAM_BINS)) + " |",
        "|---|" + "---:|" * HISTOGRAM_BINS,
    ]
    for row in rows:
        hist = row.get("correct_histogram") or [None] * HISTOGRAM_BINS
        total = sum(v for v in hist if _is_number(v))
        share = [(v / total if total and _is_number(v) else None) for v in hist]
        lines.append(f"| {row['model']} | " + " | ".join(_percent(v) for v in share) + " |")
    lines += [
        "",
        "## Trials",
        "",
        "| trial | model | status | epochs | best val MAA | wall time (s) | failures | hyperparameters |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for trial in sorted(exp.trials, key=lambda t: -(t.best or {}).get("val_maa", -1.0)):
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(trial.config.items()))
        status = trial.status + (f": {trial.error}" if trial.error else "")
        lines.append(
            f"| {trial.trial_id} | {trial.model} | {status} | {len(trial.epochs)} "
            f"| {_fmt((trial.best or {}).get('val_maa'))} | {_fmt(trial.wall_time_s, 1)} | {trial.failures} | {params} |"
        )
    return "\n".join(lines) + "\n"


CSV_FIELDS = [
    "rank", "model", "kind", "val_maa", "test_maa", "test_first_accuracy", "val_loss", "train_loss", "test_loss",
    "best_epoch", "epochs", "wall_time_s", "parameters", "trial_id", "trials", "stopped_early", "failed",
    "search_time_s",
] + [f"test_accuracy_at_{i}" for i in range(1, POSITIONS + 1)] + [f"test_correct_{i}" for i in range(HISTOGRAM_BINS)]


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for rank, row in enumerate(rows, 1):
            flat = {k: v for k, v in row.items() if k in CSV_FIELDS}
            flat["rank"] = rank
            for i, value in enumerate(row.get("accuracy_at") or [], 1):
                flat[f"test_accuracy_at_{i}"] = value
            for i, value in enumerate(row.get("correct_histogram") or []):
                flat[f"test_correct_{i}"] = value
            writer.writerow(flat)


def write_best_configs(exp: Experiment, rows: list[dict], directory: Path) -> list[Path]:
    """best_configs/<model>.json in the format `python -m tuning.train --config` reads."""
    directory.mkdir(exist_ok=True)
    options = exp.meta.get("options", {})
    paths = []
    for row in rows:
        if row["kind"] != "model":
            continue
        content = {
            "task": exp.task,
            "model": row["model"],
            "config": row["config"],
            "protocol": options.get("protocol"),
            "epochs": row.get("best_epoch"),
            "val_maa": row.get("val_maa"),
            "test_maa": row.get("test_maa"),
            "trial_id": row.get("trial_id"),
            "experiment": str(exp.path),
        }
        path = directory / f"{row['model']}.json"
        path.write_text(json.dumps(content, indent=2) + "\n")
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------
# learning curves
# ---------------------------------------------------------------------------


def plot_learning_curves(exp: Experiment, rows: list[dict], directory: Path, overview: Path) -> list[Path]:
    """Per family: loss (train, val) and val MAA by epoch of the best trial; plus every trial's val MAA."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    directory.mkdir(exist_ok=True)
    paths = []
    winners = {row["model"]: row["trial_id"] for row in rows if row["kind"] == "model"}
    for family, trial_id in winners.items():
        trial = next(t for t in exp.trials if t.trial_id == trial_id)
        epochs = [r.get("epoch") for r in trial.epochs]
        fig, (loss_ax, maa_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
        for key, label, style in (("train_loss", "train loss", "-o"), ("val_loss", "val loss", "--o")):
            values = [r.get(key, math.nan) for r in trial.epochs]
            loss_ax.plot(epochs, values, style, label=label)
        loss_ax.set_xlabel("epoch")
        loss_ax.set_ylabel("cross-entropy loss")
        loss_ax.legend()
        maa_ax.plot(epochs, [r.get("val_maa", math.nan) for r in trial.epochs], "-o", color="tab:green", label="val MAA")
        maa_ax.set_xlabel("epoch")
        maa_ax.set_ylabel("MAA")
        maa_ax.legend()
        for axis in (loss_ax, maa_ax):
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.suptitle(f"{family}, {exp.task} task: learning curves of the best trial ({trial_id})")
        fig.tight_layout()
        path = directory / f"{family}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {family: f"C{i}" for i, family in enumerate(sorted({t.model for t in exp.trials}))}
    for trial in exp.trials:
        if not trial.epochs:
            continue
        winner = winners.get(trial.model) == trial.trial_id
        ax.plot(
            [r.get("epoch") for r in trial.epochs],
            [r.get("val_maa", math.nan) for r in trial.epochs],
            "-o" if winner else "-",
            color=colors[trial.model],
            alpha=1.0 if winner else 0.35,
            linewidth=2 if winner else 1,
            label=trial.model if winner else None,
        )
    for baseline in exp.baselines:
        value = (baseline.get("val") or {}).get("maa")
        if _is_number(value):
            ax.axhline(value, color="grey", linestyle=":", linewidth=1)
            ax.annotate(baseline["name"], (1, value), fontsize=7, color="grey", va="bottom")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("val MAA")
    ax.set_title(f"{exp.task} task: every trial (bold: each model's best; dotted: baselines)")
    if winners:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(overview, dpi=100)
    plt.close(fig)
    return paths + [overview]


def generate(exp_dir: str | Path) -> dict[str, Path]:
    """Write the leaderboard, best configs and learning curves; returns what was written."""
    exp = load_experiment(exp_dir)
    rows = leaderboard(exp)
    paths = {
        "leaderboard_md": exp.path / "leaderboard.md",
        "leaderboard_csv": exp.path / "leaderboard.csv",
        "best_configs": exp.path / "best_configs",
        "learning_curves": exp.path / "learning_curves",
        "learning_curves_overview": exp.path / "learning_curves.png",
    }
    paths["leaderboard_md"].write_text(leaderboard_markdown(exp, rows))
    write_csv(rows, paths["leaderboard_csv"])
    write_best_configs(exp, rows, paths["best_configs"])
    plot_learning_curves(exp, rows, paths["learning_curves"], paths["learning_curves_overview"])
    return paths


# ---------------------------------------------------------------------------
# experiments kept at a URI (s3://, gs://, file://): pyarrow.fs
# ---------------------------------------------------------------------------


def is_uri(path) -> bool:
    return isinstance(path, str) and "://" in path


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tuning.report",
        description="Regenerate the leaderboard, best configs and learning curves of a search experiment directory.",
    )
    parser.add_argument("experiment", help="the experiment directory (printed by tuning.search), or its s3:// / gs:// URI")
    parser.add_argument("--local-dir", type=Path,
                        help=f"for a URI: where to copy the experiment down and write the report (default: ./{LOCAL_EXPERIMENTS}/<name>)")
    args = parser.parse_args(argv)
    try:
        experiment = args.experiment
        if is_uri(experiment):
            local = args.local_dir or LOCAL_EXPERIMENTS / experiment.rstrip("/").rsplit("/", 1)[-1]
            experiment = copy_down(experiment, local)
            print(f"copied {args.experiment} to {experiment}")
        paths = generate(experiment)
    except (FileNotFoundError, OSError, ValueError) as error:  # pyarrow: unreachable bucket, bad URI
        print(f"tuning.report: error: {error}", file=sys.stderr)
        return 2
    print(paths["leaderboard_md"].read_text())
    for label, path in paths.items():
        print(f"{label}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
