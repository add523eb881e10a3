"""The search's report: leaderboard, best configs, learning curves and report.html. ``python -m tuning.report DIR``.

Reads the experiment through ``tuning.results`` (Tune's public
``ExperimentAnalysis`` and the search's own files), so it works on a finished,
running or interrupted experiment, and writes into the experiment folder:

- ``leaderboard.md`` / ``leaderboard.csv``: one row per model family (its best
  trial on val MAA, evaluated once on test) and per simple baseline: val and
  test MAA, first-position accuracy, for ``seq`` Recall@10, NDCG@10 and MRR@10,
  the gap to the strongest baseline, epochs, wall time, parameters, and how
  many of the family's planned trials finished (a family with failed trials
  is flagged); the paper's configuration of each family on its own rows;
  accuracy at each position and correct predictions per session on test (the
  paper's Tables 3 and 4); every trial with its status;
- ``best_configs/<model>.json``: each winner's configuration, for
  ``python -m tuning.train --config``;
- ``learning_curves/<model>.png`` and ``learning_curves.png``: val MAA by epoch
  (the paper's Figure 5);
- ``report.html``: all of the above in one self-contained page (plotly's
  JavaScript embedded: it opens offline, from disk, in any browser), with
  interactive learning curves of every trial per family and, per family,
  Optuna's optimisation history, parameter importances and parallel
  coordinates. While the search runs the page is rewritten every ~30 s and
  reloads itself.

An experiment kept at a URI (``--storage s3://...`` / ``gs://...``) is copied
down first (``tuning.storage.copy_down``) to ``./experiments/<name>`` (or
``--local-dir``), and the report is written there.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

from tuning.options import SAMPLER_NAMES
from tuning.results import Experiment, Trial, is_number, load_experiment
from tuning.storage import OPTUNA_FILE, copy_down, has_masked_password, is_uri

LOCAL_EXPERIMENTS = Path("experiments")  # where an experiment kept at a URI is copied down to
POSITIONS = 10
HISTOGRAM_BINS = 11
RANKING = ("recall_at_10", "ndcg_at_10", "mrr_at_10")
REFRESH_S = 30
# With fewer completed trials than this, PED-ANOVA's importances describe noise (top/bottom quantiles of 2-3 points).
MIN_TRIALS_FOR_IMPORTANCES = 5


# ---------------------------------------------------------------------------
# leaderboard
# ---------------------------------------------------------------------------


def _winner(exp: Experiment, family: str) -> Trial | None:
    trials = exp.trials_of(family)
    test = exp.tests.get(family)
    if test is not None:
        match = next((t for t in trials if t.trial_id == test.get("trial_id")), None)
        if match is not None:
            return match
    scored = [t for t in trials if t.best is not None]
    return max(scored, key=lambda t: t.best_val) if scored else None


def _test_columns(test: dict) -> dict:
    row = {
        "test_maa": test.get("maa"),
        "test_first_accuracy": test.get("first_accuracy"),
        "test_loss": test.get("loss"),
        "accuracy_at": test.get("accuracy_at"),
        "correct_histogram": test.get("correct_histogram"),
    }
    row.update({f"test_{name}": test.get(name) for name in RANKING})
    return row


def _trial_row(exp: Experiment, family: str, trial: Trial, test: dict | None, kind: str) -> dict:
    trials = exp.trials_of(family)
    epoch = (test or {}).get("epoch") or (trial.best or {}).get("epoch")
    chosen = next((r for r in trial.epochs if r.get("epoch") == epoch), trial.best or {})
    finished = sum(t.status in ("finished", "stopped early") for t in trials)
    planned = exp.planned_trials(family)
    failed = sum(t.status == "error" for t in trials)
    flags = []
    if failed:
        flags.append(f"{failed} trial(s) failed")
    if planned is not None and len(trials) < planned:
        flags.append(f"{len(trials)} of {planned} planned trials ran")
    return {
        "model": family if kind == "model" else f"{family} (paper config)",
        "family": family,
        "kind": kind,
        "val_maa": chosen.get("val_maa"),
        **_test_columns((test or {}).get("test") or {}),
        "val_loss": chosen.get("val_loss"),
        "train_loss": chosen.get("train_loss"),
        "best_epoch": epoch,
        "epochs": len(trial.epochs),
        "wall_time_s": trial.wall_time_s,
        "parameters": chosen.get("num_parameters"),
        "trial_id": trial.trial_id,
        "trial": trial.label,
        "trials": len(trials),
        "finished": finished,
        "planned": planned,
        "stopped_early": sum(t.status == "stopped early" for t in trials),
        "failed": failed,
        "flag": "; ".join(flags),
        "search_time_s": sum(t.wall_time_s for t in trials),
        "config": trial.config,
    }


def leaderboard(exp: Experiment) -> list[dict]:
    """One row per family (its winner) and per baseline, best val MAA first; then the paper-config rows."""
    rows = []
    for family in exp.families:
        winner = _winner(exp, family)
        if winner is not None:
            rows.append(_trial_row(exp, family, winner, exp.tests.get(family), "model"))
    for baseline in exp.baselines:
        val, test = baseline.get("val") or {}, baseline.get("test") or {}
        rows.append({
            "model": f"baseline: {baseline['name']}",
            "family": baseline["name"],
            "kind": "baseline",
            "val_maa": val.get("maa"),
            **_test_columns(test),
            "wall_time_s": baseline.get("seconds"),
        })
    rows.sort(key=lambda r: -(r["val_maa"] if is_number(r.get("val_maa")) else -1.0))
    strongest = strongest_baseline(rows)
    for row in rows:
        if strongest is not None and row["kind"] == "model" and is_number(row.get("test_maa")):
            row["vs_best_baseline"] = row["test_maa"] - strongest["test_maa"]
    return rows


def paper_rows(exp: Experiment) -> list[dict]:
    """Each family's paper configuration: its trial's best epoch on val and, when evaluated, on test."""
    rows = []
    for family in exp.families:
        trial = next((t for t in exp.trials_of(family) if t.point == "paper"), None)
        if trial is not None:
            rows.append(_trial_row(exp, family, trial, exp.paper_tests.get(family), "paper"))
    return rows


def strongest_baseline(rows: list[dict]) -> dict | None:
    """The baseline with the best val MAA (chosen on val, like the models), if it has a test score."""
    baselines = [r for r in rows if r["kind"] == "baseline" and is_number(r.get("val_maa")) and is_number(r.get("test_maa"))]
    return max(baselines, key=lambda r: r["val_maa"]) if baselines else None


def verdicts(rows: list[dict]) -> list[str]:
    """Plain sentences: which families beat the strongest simple baseline on test, which fall short and by how much."""
    strongest = strongest_baseline(rows)
    models = [r for r in rows if r["kind"] == "model" and is_number(r.get("test_maa"))]
    if strongest is None or not models:
        return []
    name = strongest["family"]
    below = [r for r in models if r["test_maa"] < strongest["test_maa"]]
    above = [r for r in models if r["test_maa"] >= strongest["test_maa"]]
    lines = []
    if above:
        lines.append(f"Above the strongest simple baseline ({name}, test MAA {strongest['test_maa']:.4f}): "
                     + ", ".join(f"{r['family']} (+{r['test_maa'] - strongest['test_maa']:.4f})" for r in above) + ".")
    if below:
        others = [r for r in rows if r["kind"] == "baseline" and r is not strongest and is_number(r.get("test_maa"))]

        def also(row: dict) -> str:
            weaker = [b["family"] for b in others if row["test_maa"] < b["test_maa"]]
            return f"; also below {', '.join(weaker)}" if weaker else ""

        lines.append(f"Below {name} (test MAA {strongest['test_maa']:.4f}): "
                     + ", ".join(f"{r['family']} ({r['test_maa'] - strongest['test_maa']:+.4f}{also(r)})" for r in below)
                     + ".")
    flagged = [r for r in models if r.get("flag")]
    if flagged:
        lines.append("Not every planned trial finished: " + "; ".join(f"{r['family']}: {r['flag']}" for r in flagged) + ".")
    return lines


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _signed(value) -> str:
    return f"{value:+.4f}" if is_number(value) else "–"


def _percent(value) -> str:
    return f"{100 * value:.1f}" if is_number(value) else "–"


def _trials_cell(row: dict) -> str:
    if row["kind"] == "baseline":
        return "–"
    planned = f"/{row['planned']}" if row.get("planned") is not None else ""
    cell = f"{row['finished']}{planned} ({row['stopped_early']} stopped early, {row['failed']} failed)"
    return cell + (" ⚠" if row.get("flag") else "")


def table_columns(task: str) -> list[tuple[str, str]]:
    """(header, row key) of the leaderboard's main table."""
    columns = [("val MAA", "val_maa"), ("test MAA", "test_maa"), ("vs best baseline (test)", "vs_best_baseline"),
               ("test first-position acc.", "test_first_accuracy")]
    if task == "seq":
        columns += [("test Recall@10", "test_recall_at_10"), ("test NDCG@10", "test_ndcg_at_10"),
                    ("test MRR@10", "test_mrr_at_10")]
    return columns


def _cell(row: dict, key: str) -> str:
    if key == "vs_best_baseline":
        return _signed(row.get(key))
    return _fmt(row.get(key))


def leaderboard_markdown(exp: Experiment, rows: list[dict]) -> str:
    options = exp.options
    columns = table_columns(exp.task)
    head = " | ".join(h for h, _ in columns)
    lines = [
        f"# Leaderboard: {exp.task} task, experiment `{exp.path.name}`",
        "",
        f"Selection on val MAA only; test evaluated once per family (its best trial's best epoch). "
        f"Protocol {options.get('protocol', '?')}, data `{exp.meta.get('data_dir', '?')}`, "
        f"{options.get('trials_per_family', '?')} searched trials per family plus its paper configuration, "
        f"up to {options.get('max_epochs', '?')} epochs each ({SAMPLER_NAMES.get(options.get('searcher'), '?')} sampler per family, "
        f"scheduler {options.get('scheduler', '?')}, budget {options.get('budget', '?')}).",
        "",
        f"| rank | model | {head} | best epoch / epochs | wall time (s) | parameters | trials finished (stopped early, failed) |",
        "|---:|---|" + "---:|" * len(columns) + "---:|---:|---:|---|",
    ]
    for rank, row in enumerate(rows, 1):
        model = row["kind"] == "model"
        epochs = f"{row.get('best_epoch')} / {row.get('epochs')}" if model else "–"
        cells = " | ".join(_cell(row, key) for _, key in columns)
        lines.append(
            f"| {rank} | {row['model']} | {cells} | {epochs} | {_fmt(row.get('wall_time_s'), 1)} "
            f"| {_fmt(row.get('parameters'))} | {_trials_cell(row)} |"
        )
    said = verdicts(rows)
    if said:
        lines += [""] + said
    papers = paper_rows(exp)
    if papers:
        lines += [
            "",
            "## The paper's configurations (one trial per family; its learning rates need more epochs than a small budget gives)",
            "",
            "| model | val MAA | test MAA | status |",
            "|---|---:|---:|---|",
        ]
        for row in papers:
            trial = next(t for t in exp.trials if t.trial_id == row["trial_id"])
            lines.append(f"| {row['model']} | {_fmt(row.get('val_maa'))} | {_fmt(row.get('test_maa'))} | {trial.status} |")
    lines += _position_tables(rows)
    lines += [
        "",
        "## Trials",
        "",
        "| trial | status | epochs | best val MAA | wall time (s) | failures | hyperparameters |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for trial in sorted(exp.trials, key=lambda t: (t.model, -t.best_val)):
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(trial.config.items()))
        status = trial.status + (f": {trial.error}" if trial.error else "")
        lines.append(
            f"| {trial.label} | {status} | {len(trial.epochs)} | {_fmt((trial.best or {}).get('val_maa'))} "
            f"| {_fmt(trial.wall_time_s, 1)} | {trial.failures} | {params} |"
        )
    return "\n".join(lines) + "\n"


def _position_tables(rows: list[dict]) -> list[str]:
    lines = [
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
        lines.append(f"| {row['model']} | " + " | ".join(_percent(v) for v in _shares(row.get("correct_histogram"))) + " |")
    return lines


def _shares(histogram) -> list:
    histogram = histogram or [None] * HISTOGRAM_BINS
    total = sum(v for v in histogram if is_number(v))
    return [(v / total if total and is_number(v) else None) for v in histogram]


CSV_FIELDS = [
    "rank", "model", "kind", "val_maa", "test_maa", "vs_best_baseline", "test_first_accuracy",
    *(f"test_{name}" for name in RANKING), "val_loss", "train_loss", "test_loss", "best_epoch", "epochs",
    "wall_time_s", "parameters", "trial_id", "trials", "finished", "planned", "stopped_early", "failed", "flag",
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
    paths = []
    for row in rows:
        if row["kind"] != "model":
            continue
        content = {
            "task": exp.task,
            "model": row["family"],
            "config": row["config"],
            "protocol": exp.options.get("protocol"),
            "epochs": row.get("best_epoch"),
            "val_maa": row.get("val_maa"),
            "test_maa": row.get("test_maa"),
            "trial_id": row.get("trial_id"),
            "experiment": str(exp.path),
        }
        path = directory / f"{row['family']}.json"
        path.write_text(json.dumps(content, indent=2) + "\n")
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------
# learning curves (PNG: the paper's Figure 5)
# ---------------------------------------------------------------------------


def plot_learning_curves(exp: Experiment, rows: list[dict], directory: Path, overview: Path) -> list[Path]:
    """Per family: loss (train, val) and val MAA by epoch of the best trial; plus every trial's val MAA."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    directory.mkdir(exist_ok=True)
    paths = []
    winners = {row["family"]: row["trial_id"] for row in rows if row["kind"] == "model"}
    for family, trial_id in winners.items():
        trial = next(t for t in exp.trials if t.trial_id == trial_id)
        epochs = [r.get("epoch") for r in trial.epochs]
        fig, (loss_ax, maa_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
        for key, label, style in (("train_loss", "train loss", "-o"), ("val_loss", "val loss", "--o")):
            loss_ax.plot(epochs, [r.get(key, math.nan) for r in trial.epochs], style, label=label)
        loss_ax.set_xlabel("epoch")
        loss_ax.set_ylabel("loss")
        loss_ax.legend()
        maa_ax.plot(epochs, [r.get("val_maa", math.nan) for r in trial.epochs], "-o", color="tab:green", label="val MAA")
        maa_ax.set_xlabel("epoch")
        maa_ax.set_ylabel("MAA")
        maa_ax.legend()
        for axis in (loss_ax, maa_ax):
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.suptitle(f"{family}, {exp.task} task: learning curves of the best trial ({trial.label})")
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
        if is_number(value):
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


# ---------------------------------------------------------------------------
# report.html
# ---------------------------------------------------------------------------


def _html_table(headers: list[str], body: list[list[str]], table_id: str | None = None,
                row_classes: list[str] | None = None) -> str:
    ident = f' id="{table_id}"' if table_id else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    classes = row_classes or [""] * len(body)
    rows = "".join(
        (f'<tr class="{css}">' if css else "<tr>") + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row, css in zip(body, classes)
    )
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _learning_curve_figure(exp: Experiment, family: str, winner_id: str | None):
    import plotly.graph_objects as go

    fig = go.Figure()
    for trial in exp.trials_of(family):
        if not trial.epochs:
            continue
        best = trial.trial_id == winner_id
        fig.add_trace(go.Scatter(
            x=[r.get("epoch") for r in trial.epochs], y=[r.get("val_maa") for r in trial.epochs],
            mode="lines+markers", name=trial.label + (" (winner)" if best else ""),
            line={"width": 3 if best else 1.5, "dash": "dash" if trial.point == "paper" else "solid"},
            hovertemplate="epoch %{x}: val MAA %{y:.4f}<extra>" + html.escape(trial.label) + "</extra>",
        ))
    for baseline in exp.baselines:
        value = (baseline.get("val") or {}).get("maa")
        if is_number(value):
            fig.add_hline(y=value, line={"dash": "dot", "color": "grey", "width": 1}, annotation_text=baseline["name"],
                          annotation_position="top left", annotation_font_size=10)
    fig.update_layout(title=f"{family}: val MAA by epoch", xaxis_title="epoch", yaxis_title="val MAA",
                      height=380, margin={"t": 50, "b": 40, "l": 60, "r": 20}, template="plotly_white",
                      legend={"orientation": "h", "yanchor": "top", "y": -0.18, "font": {"size": 10}})
    fig.update_xaxes(dtick=1)
    return fig


def _optuna_figures(storage_url: str | None, experiment: str, family: str) -> tuple[list, str | None]:
    """Optuna's history, importances and parallel coordinates of one family's study, or a note why not."""
    if storage_url is None:
        return [], "the Optuna study is not reachable from here (give tuning.report --optuna-storage)"
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator

    from tuning.searcher import study_name

    try:
        study = optuna.load_study(study_name=study_name(experiment, family), storage=storage_url)
    except Exception as error:  # noqa: BLE001 - no study yet (nothing asked), or an unreachable database
        return [], f"no Optuna study to show ({str(error).strip().splitlines()[0] if str(error).strip() else error})"
    figures, notes = [], []
    try:
        figures.append(optuna.visualization.plot_optimization_history(study))
    except (ValueError, RuntimeError) as error:
        notes.append(f"history: {error}")
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) >= MIN_TRIALS_FOR_IMPORTANCES:
        try:
            figures.append(optuna.visualization.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator()))
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            notes.append(f"importances: {error}")
    else:
        notes.append(f"parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCES} completed trials (this family "
                     f"has {len(complete)}; trials stopped early count as pruned)")
    if len(complete) >= 2:
        try:
            figures.append(optuna.visualization.plot_parallel_coordinate(study))
        except (ValueError, RuntimeError) as error:
            notes.append(f"parallel coordinates: {error}")
    for fig in figures:
        fig.update_layout(height=380, margin={"t": 50, "b": 40, "l": 60, "r": 20}, template="plotly_white")
    return figures, "; ".join(notes) or None


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5rem auto;max-width:1200px;color:#222;padding:0 1rem}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child,#leaderboard td:nth-child(2){text-align:left}
tr.baseline td{color:#555;background:#fafafa} .note{color:#666;font-size:.9rem} .status{font-weight:600}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:.5rem}
h2{margin-top:2rem;border-bottom:1px solid #eee}
"""


def report_html(exp: Experiment, rows: list[dict], storage_url: str | None, running: str | None) -> str:
    """The self-contained page (see the module docstring); `running` is a status line while the search runs."""
    from plotly.offline import get_plotlyjs

    columns = table_columns(exp.task)
    headers = ["rank", "model", *(h for h, _ in columns), "best epoch / epochs", "parameters", "trials finished (stopped early, failed)"]
    body = []
    for rank, row in enumerate(rows, 1):
        epochs = f"{row.get('best_epoch')} / {row.get('epochs')}" if row["kind"] == "model" else "–"
        body.append([str(rank), row["model"], *(_cell(row, key) for _, key in columns), epochs,
                     _fmt(row.get("parameters")), _trials_cell(row) + (f" {row['flag']}" if row.get("flag") else "")])
    leaderboard_table = _html_table(headers, body, "leaderboard", [r["kind"] for r in rows])
    positions = _html_table(["model", *(f"T={i}" for i in range(1, POSITIONS + 1))],
                            [[r["model"], *(_percent(v) for v in (r.get("accuracy_at") or [None] * POSITIONS))] for r in rows])
    histogram = _html_table(["model", *(str(i) for i in range(HISTOGRAM_BINS))],
                            [[r["model"], *(_percent(v) for v in _shares(r.get("correct_histogram")))] for r in rows])
    papers = paper_rows(exp)
    paper_table = _html_table(["model", "val MAA", "test MAA", "status"], [
        [r["model"], _fmt(r.get("val_maa")), _fmt(r.get("test_maa")),
         next(t.status for t in exp.trials if t.trial_id == r["trial_id"])] for r in papers
    ]) if papers else '<p class="note">No paper-configuration trials in this search.</p>'
    trials_table = _html_table(
        ["trial", "status", "epochs", "best val MAA", "wall time (s)", "failures", "hyperparameters"],
        [[t.label, t.status + (f": {t.error}" if t.error else ""), str(len(t.epochs)), _fmt((t.best or {}).get("val_maa")),
          _fmt(t.wall_time_s, 1), str(t.failures),
          ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(t.config.items()))]
         for t in sorted(exp.trials, key=lambda t: (t.model, -t.best_val))],
        "trials",
    )
    winners = {r["family"]: r["trial_id"] for r in rows if r["kind"] == "model"}
    figure_id = 0

    def embed(fig) -> str:
        nonlocal figure_id
        figure_id += 1
        return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"figure-{figure_id}")

    curves = "".join(
        f'<div class="plot">{embed(_learning_curve_figure(exp, family, winners.get(family)))}</div>'
        for family in exp.families if exp.trials_of(family)
    )
    per_family = []
    for family in exp.families:
        figures, note = _optuna_figures(storage_url, exp.path.name, family)
        section = f'<h3>{html.escape(family)}</h3><div class="plots">' + "".join(
            f'<div class="plot">{embed(fig)}</div>' for fig in figures) + "</div>"
        if note:
            section += f'<p class="note">{html.escape(note)}</p>'
        per_family.append(section)
    options = exp.options
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if running else ""
    status = running or f"finished; page written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}"
    said = "".join(f"<p>{html.escape(line)}</p>" for line in verdicts(rows))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">{refresh}
<title>{html.escape(exp.task)} search {html.escape(exp.path.name)}</title>
<style>{STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>{html.escape(exp.task)} task: experiment <code>{html.escape(exp.path.name)}</code></h1>
<p class="status">Search {html.escape(status)}</p>
<p class="note">Protocol {html.escape(str(options.get('protocol', '?')))}, data <code>{html.escape(str(exp.meta.get('data_dir', '?')))}</code>;
{html.escape(str(options.get('trials_per_family', '?')))} searched trials per family (its own Optuna study, {html.escape(SAMPLER_NAMES.get(options.get('searcher'), '?'))} sampler,
{html.escape(str(options.get('scheduler', '?')))} early stopping) plus the paper's configuration; up to {html.escape(str(options.get('max_epochs', '?')))} epochs.
Learning curves: the winner bold, the paper's configuration dashed, baselines (val) dotted.
Selection on val MAA; test evaluated once per family.</p>
<h2>Leaderboard</h2>
{leaderboard_table}
{said}
<h2>The paper's configurations</h2>
{paper_table}
<h2>Test accuracy (%) at each position of the predicted half (paper Table 3)</h2>
{positions}
<h2>Test sessions (%) by number of correct predictions (paper Table 4)</h2>
{histogram}
<h2>Learning curves</h2>
<div class="plots">{curves}</div>
<h2>Search per family (Optuna)</h2>
{''.join(per_family)}
<h2>Trials</h2>
{trials_table}
</body></html>
"""


def optuna_url(exp: Experiment, given: str | None = None) -> str | None:
    """The storage URL of the experiment's Optuna studies as reachable from here, or None."""
    if given:
        return given
    local = exp.path / OPTUNA_FILE
    if local.exists():
        return f"sqlite:///{local}"
    saved = exp.meta.get("optuna_storage")
    if saved and not has_masked_password(saved) and not saved.startswith("sqlite:"):
        return saved
    return None


def generate(exp_dir: str | Path, optuna_storage: str | None = None, running: str | None = None) -> dict[str, Path]:
    """Write the leaderboard, best configs, learning curves and report.html; returns what was written.

    `running`: a status line while the search runs (the page then reloads itself).
    """
    exp = load_experiment(exp_dir)
    rows = leaderboard(exp)
    paths = {
        "report_html": exp.path / "report.html",
        "leaderboard_md": exp.path / "leaderboard.md",
        "leaderboard_csv": exp.path / "leaderboard.csv",
        "best_configs": exp.path / "best_configs",
        "learning_curves": exp.path / "learning_curves",
        "learning_curves_overview": exp.path / "learning_curves.png",
    }
    paths["leaderboard_md"].write_text(leaderboard_markdown(exp, rows))
    write_csv(rows, paths["leaderboard_csv"])
    write_best_configs(exp, rows, paths["best_configs"])
    if not running:
        plot_learning_curves(exp, rows, paths["learning_curves"], paths["learning_curves_overview"])
    page = report_html(exp, rows, optuna_url(exp, optuna_storage), running)
    tmp = paths["report_html"].with_suffix(".html.tmp")
    tmp.write_text(page)
    tmp.replace(paths["report_html"])  # a browser reloading mid-write never sees half a page
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tuning.report",
        description="Regenerate the leaderboard, best configs, learning curves and report.html of a search experiment.",
    )
    parser.add_argument("experiment", help="the experiment directory (printed by tuning.search), or its s3:// / gs:// URI")
    parser.add_argument("--local-dir", type=Path,
                        help=f"for a URI: where to copy the experiment down and write the report (default: ./{LOCAL_EXPERIMENTS}/<name>)")
    parser.add_argument("--optuna-storage", help="the studies' SQLAlchemy URL, when not the experiment's optuna.db "
                        "(needed for a database whose password the search did not save)")
    args = parser.parse_args(argv)
    try:
        experiment = args.experiment
        if is_uri(experiment):
            local = args.local_dir or LOCAL_EXPERIMENTS / experiment.rstrip("/").rsplit("/", 1)[-1]
            experiment = copy_down(experiment, local)
            print(f"copied {args.experiment} to {experiment}")
        paths = generate(experiment, args.optuna_storage)
    except (FileNotFoundError, OSError, ValueError) as error:  # pyarrow: unreachable bucket, bad URI
        print(f"tuning.report: error: {error}", file=sys.stderr)
        return 2
    print(paths["leaderboard_md"].read_text())
    for label, path in paths.items():
        print(f"{label}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
