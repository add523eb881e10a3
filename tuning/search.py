"""The main job: a fair hyperparameter search over the paper's models, on Ray Tune with Optuna and ASHA.

    python -m tuning.search --task skip                      # every family, embedded synthetic data
    python -m tuning.search --task seq --model transformer,lstm --data DIR --trials-per-family 30 --gpus-per-trial 0.5
    python -m tuning.search --task skip --name NAME --resume # continue an interrupted search

Every model family gets the same budget: its own Optuna study (TPE, seeded per
family) and its own ASHA brackets, ``--trials-per-family`` searched trials
(the first is the family's start configuration, which learns within a small
budget's epochs) plus the paper's configuration as one more, marked trial;
all families run concurrently in one Tune run (tuning/searcher.py). One trial
trains one configuration (tuning/trainable.py) and reports val MAA, the only
selection metric, every epoch, with a checkpoint.

The recipe (`run_search`): read the options back when resuming, choose the
families, plan their spaces and points, check the data and the Optuna storage,
connect to Ray, size the run to the cluster, open the experiment folder, score
the simple baselines, run Tune, then evaluate each family's winner once on the
test split, copy it to ``best/<model>/`` and write the report. Bad arguments
fail before Ray starts, with one line.

The console gets one line per trial event (tuning/console.py) and the
leaderboard at the end; ``report.html`` in the experiment folder is rewritten
while the search runs. Tune's status tables and Ray's log lines come back with
``--verbose``.

Storage: ``--storage`` is a local or shared path, or a URI pyarrow opens
(``s3://bucket/experiments``, ``gs://...``). With a URI, Tune writes trials and
checkpoints there (trials resume on any node), ``search.json`` and
``baselines.json`` go there too (``--resume`` reads them from there), and the
driver keeps a local copy in ``./experiments/<name>`` for the report, test
results and ``best/``, copied up beside the trials at the end (tuning/storage.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tuning.families import UnknownFamily, families_for
from tuning.options import (
    MEMORY_INPUT_MAX_SESSIONS,
    SAMPLER_NAMES,
    METRIC,
    SearchOptions,
    UsageError,
    check_fixed,
    check_name,
    check_options,
    parse_options,
)
from tuning.spaces import SpaceError, plan_search
from tuning.storage import (
    BASELINES_FILE,
    BEST_DIR,
    OPTUNA_FILE,
    SEARCH_FILE,
    TEST_DIR,
    copy_down,
    copy_up,
    experiment_root,
    has_masked_password,
    is_uri,
    latest_experiment,
    local_experiment_dir,
    mask_url,
    read_search_meta,
    remember_url,
)


@dataclass
class ExperimentPlace:
    """Where one experiment lives: Tune's root (path or URI), its name, the driver's local folder."""

    root: str
    name: str
    local: Path
    remote: str | None  # the experiment at a URI, when --storage is one
    optuna_url: str

    @property
    def tune_path(self) -> str:
        return f"{self.root.rstrip('/')}/{self.name}"


def say(*parts, **kwargs) -> None:
    print(*parts, **kwargs, flush=True)


# ---------------------------------------------------------------------------
# the recipe
# ---------------------------------------------------------------------------


def run_search(options: SearchOptions) -> Path:
    """Run (or resume) one search end to end; returns the local experiment folder.

    Raises UsageError for bad settings and for a cluster that cannot be reached,
    before any trial starts.
    """
    options = resumed_options(options)
    families = choose_families(options)
    options = options.resolved()
    check_options(options)
    plans, fixed = plan(families, options)
    given_data = check_data(options.data)
    optuna_url = check_optuna_storage(options)
    cluster = connect_cluster(options)
    data_dir, dataset = given_data or default_data()
    options = size_to_cluster(options, dataset, cluster)
    place = open_experiment(options, plans, fixed, data_dir, dataset, optuna_url)
    announce(options, plans, place)
    score_baselines(options, data_dir, place)
    results = run_tune(options, families, plans, fixed, data_dir, place)
    return finish(options, families, results, data_dir, place)


def resumed_options(options: SearchOptions) -> SearchOptions:
    """For --resume, the experiment's saved options; where to run (address, storage, name) may change."""
    if not options.resume:
        return options
    root = experiment_root(options.storage)
    if options.name is not None:
        check_name(options.name)
    name = options.name or latest_experiment(root, options.task)
    if name is None:
        raise UsageError(f"--resume: no experiment of task {options.task!r} under {root}; name one with --name")
    meta_path, saved = read_search_meta(root, name)
    if saved is None:
        raise UsageError(f"--resume: {meta_path} not found; is --name {name} an experiment started by tuning.search?")
    resumed = SearchOptions(**saved["options"])
    resumed.address, resumed.storage, resumed.name, resumed.resume = options.address, options.storage, name, True
    resumed.hooks, resumed.verbose = options.hooks, options.verbose
    if options.optuna_storage:
        resumed.optuna_storage = options.optuna_storage
    elif has_masked_password(resumed.optuna_storage):
        raise UsageError(
            f"--resume: the studies live at {resumed.optuna_storage}, whose password is never saved; "
            "give --optuna-storage URL again"
        )
    return resumed


def choose_families(options: SearchOptions) -> list:
    check_options(options)
    try:
        families = families_for(options.task, options.model)
    except UnknownFamily as error:
        raise UsageError(str(error)) from None
    if options.data and is_uri(options.data):
        local_only = [f for f in families if f.local_data_only]
        families = [f for f in families if not f.local_data_only]
        if not families:
            raise UsageError(
                f"--model {options.model} reads the prepared data only from a local or shared path, not from "
                f"--data {options.data}; copy it to a shared path (e.g. `aws s3 sync` / `gsutil rsync`) and give that"
            )
        if local_only:
            say(f"note: {', '.join(f.name for f in local_only)} left out: it reads the prepared data only from a "
                f"local or shared path, not from --data {options.data}")
    check_fixed(options.fix, families)
    return families


def plan(families: list, options: SearchOptions):
    try:
        return plan_search(families, options)
    except SpaceError as error:
        raise UsageError(str(error)) from None


def check_data(data: str | None):
    """(prepared directory, PreparedDataset) for --data, checked; None when the default set is used."""
    from data_pipeline.dataset import open_prepared
    from data_pipeline.schema import SchemaError

    if data is None:
        return None
    if is_uri(data):
        # s3://, gs://, file://: read through pyarrow.fs (no exists()/resolve(), which only know local paths)
        try:
            return data.rstrip("/"), open_prepared(data)
        except SchemaError as error:
            raise UsageError(str(error)) from None
        except OSError as error:  # unreachable bucket, missing credentials
            raise UsageError(f"--data {data}: cannot read it ({error})") from None
    path = Path(data).expanduser()
    if not path.exists():
        raise UsageError(f"--data {data}: no such directory; prepare one with `python -m data_pipeline.prepare --raw RAW --out {data}`")
    try:
        return path.resolve(), open_prepared(path)
    except SchemaError as error:
        raise UsageError(str(error)) from None


def check_optuna_storage(options: SearchOptions) -> str | None:
    """The --optuna-storage URL, checked by connecting to it before Ray starts (None: the default SQLite file)."""
    url = options.optuna_storage
    if not url:
        return None
    remember_url(url)
    import optuna
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ArgumentError as error:
        raise UsageError(f"--optuna-storage {mask_url(url)}: not an SQLAlchemy database URL ({error})") from None
    try:
        optuna.storages.RDBStorage(url)
    except Exception as error:  # noqa: BLE001 - a missing driver, a refused connection, bad credentials
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"--optuna-storage {mask_url(url)}: cannot open it ({text.replace(url, mask_url(url))})") from None
    return url


def connect_cluster(options: SearchOptions):
    from tuning.cluster import ClusterError, connect, describe

    try:
        info = connect(options.address, verbose=options.verbose)
    except ClusterError as error:
        raise UsageError(str(error)) from None
    if options.gpus_per_trial > 0 and info.max_gpus == 0:
        raise UsageError(
            f"--gpus-per-trial {options.gpus_per_trial} asked for, but the Ray cluster has no GPU "
            "(start GPU workers first, or drop --gpus-per-trial)"
        )
    if options.cpus_per_trial > info.max_cpus:
        raise UsageError(f"--cpus-per-trial {options.cpus_per_trial} is more than the cluster's {info.max_cpus:g} CPUs")
    say(describe(info))
    return info


def default_data():
    """(prepared directory, PreparedDataset) of the embedded synthetic set, made on first use.

    Called once Ray is up, so that preparing it runs on the search's own Ray instance.
    """
    from data_pipeline.dataset import open_prepared
    from data_pipeline.default import default_dataset

    say("data: the embedded synthetic dataset (generated and prepared on first use)")
    path = Path(default_dataset(show_progress=False)).resolve()
    return path, open_prepared(path)


def size_to_cluster(options: SearchOptions, dataset, cluster) -> SearchOptions:
    """The input path from the data's size and the concurrency from the cluster's (largest) size."""
    options = dataclasses.replace(options)
    if options.input_path == "auto":
        options.input_path = "memory" if dataset.num_sessions("train") <= MEMORY_INPUT_MAX_SESSIONS else "ray"
    if options.max_concurrent is None:
        # as many trials as the cluster holds at its largest: the autoscaler adds workers as trials wait
        options.max_concurrent = default_concurrency(options, cluster.max_cpus, cluster.max_gpus)
    return options


def default_concurrency(options: SearchOptions, cpus: float, gpus: float) -> int:
    """Trials at once: CPUs less one for Ray Data over CPUs per trial, and GPUs over GPUs per trial."""
    spare = 1 if options.input_path == "ray" and cpus > options.cpus_per_trial else 0
    limit = int((cpus - spare) // options.cpus_per_trial)
    if options.gpus_per_trial > 0:
        limit = min(limit, int(round(gpus / options.gpus_per_trial, 6) // 1))
    return max(1, limit)


def open_experiment(options: SearchOptions, plans: list, fixed: dict, data_dir, dataset, optuna_url) -> ExperimentPlace:
    """The experiment folder: created with search.json for a new search, read back (and copied down) on resume."""
    root = experiment_root(options.storage)
    name = options.name or f"{options.task}-{options.model.replace(',', '+')}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    options.name = name
    local = local_experiment_dir(root, name)
    remote = f"{root}/{name}" if is_uri(root) else None
    if not options.resume and ((local / SEARCH_FILE).exists() or (remote and read_search_meta(root, name)[1])):
        raise UsageError(f"--name {name}: an experiment of that name exists under {root}; continue it with --resume "
                         "or choose another name")
    if remote and options.resume:
        # search.json, baselines.json, test results, and the Optuna study as copied up at the end of the
        # last run, when this machine has none of its own (a local copy is newer than the one copied up)
        missing = tuple(f for f in (SEARCH_FILE, BASELINES_FILE, TEST_DIR, OPTUNA_FILE) if not (local / f).exists())
        if missing:
            copy_down(remote, local, only=missing)
    local.mkdir(parents=True, exist_ok=True)
    place = ExperimentPlace(root, name, local, remote, optuna_url or f"sqlite:///{local / OPTUNA_FILE}")
    if not options.resume:
        meta = {
            "options": options.saved(),
            "families": [plan.family for plan in plans],
            "planned_trials": {plan.family: plan.trials + (plan.paper is not None) for plan in plans},
            "fixed": fixed,
            "data_dir": str(data_dir),
            "data_fingerprint": dataset.fingerprint,
            "optuna_storage": mask_url(place.optuna_url),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (local / SEARCH_FILE).write_text(json.dumps(meta, indent=2, default=str))
        if remote:
            try:
                copy_up(local / SEARCH_FILE, f"{remote}/{SEARCH_FILE}")  # what --resume reads
            except (OSError, ValueError) as error:  # pyarrow: no bucket, no credentials, bad URI
                raise UsageError(f"--storage {root}: cannot write {remote}/{SEARCH_FILE} ({error})") from None
    return place


def announce(options: SearchOptions, plans: list, place: ExperimentPlace) -> None:
    """What runs, where it is written, and how to watch it (each command once, with real paths)."""
    with_paper = [plan.family for plan in plans if plan.paper is not None]
    paper = f" + the paper's configuration ({', '.join(with_paper)})" if with_paper else ""
    say(f"search: task {options.task}, {len(plans)} families ({', '.join(plan.family for plan in plans)}), "
        f"{options.trials_per_family} searched trials each{paper}, up to {options.max_epochs} epochs, "
        f"{SAMPLER_NAMES[options.searcher]} sampler and {options.scheduler} early stopping per family; "
        f"{options.max_concurrent} at a time ({options.cpus_per_trial:g} CPU"
        f"{f' + {options.gpus_per_trial:g} GPU' if options.gpus_per_trial else ''} each); budget {options.budget}")
    where = place.remote or place.local
    say(f"experiment: {where}" + (f" (trials, checkpoints); local copy and report: {place.local}" if place.remote else ""))
    say(f"  report (rewritten while it runs): {place.local / 'report.html'}")
    say(f"  TensorBoard:      tensorboard --logdir {where}")
    say(f"  optuna-dashboard: optuna-dashboard {mask_url(place.optuna_url)}")


def score_baselines(options: SearchOptions, data_dir, place: ExperimentPlace) -> None:
    from tuning.evaluate import evaluate_baselines

    if not options.baselines or (place.local / BASELINES_FILE).exists():
        return
    say("baselines (fitted on train, scored on val and test):")
    rows = evaluate_baselines(options.task, data_dir, options.protocol, say=say)
    (place.local / BASELINES_FILE).write_text(json.dumps(rows, indent=2))
    if place.remote:
        copy_up(place.local / BASELINES_FILE, f"{place.remote}/{BASELINES_FILE}")


@dataclass(frozen=True)
class ReportRefresh:
    """Rewrites report.html while the search runs (picklable: Tune keeps its callbacks with the experiment)."""

    local: str
    optuna_url: str  # masked; tuning.storage.unmask_url gives the real one in this process

    def __call__(self, running: str = "running") -> None:
        from tuning.report import generate
        from tuning.storage import unmask_url

        try:
            generate(self.local, unmask_url(self.optuna_url), running=running)
        except Exception as error:  # noqa: BLE001 - a report that cannot be drawn yet must not stop the search
            say(f"  (report.html not updated: {str(error).strip().splitlines()[0] if str(error).strip() else error})")


def run_tune(options: SearchOptions, families: list, plans: list, fixed: dict, data_dir, place: ExperimentPlace):
    """Build (or restore) the Tuner and run it; returns Tune's ResultGrid."""
    import logging

    from ray import tune

    from tuning.console import TrialEvents
    from tuning.searcher import build_search
    from tuning.trainable import RunSettings, train_trial

    if not options.verbose:
        import optuna

        logging.getLogger("ray.tune").setLevel(logging.ERROR)
        logging.getLogger("ray.train").setLevel(logging.ERROR)
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        # Tune's newer console output prints its experiment box and a TensorBoard command (for its local
        # staging folder, not the experiment) even when silent; the legacy engine at verbose=0 prints nothing.
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    settings = RunSettings(
        task=options.task,
        data_dir=str(data_dir),
        protocol=options.protocol,
        max_epochs=options.max_epochs,
        seed=options.seed,
        device=options.device,
        input_path=options.input_path,
        # <data>/cache; for data at a URI each trial picks a node-local folder (PreparedDataset.cache_dir)
        cache_dir=None if is_uri(data_dir) else str(Path(data_dir) / "cache"),
        fixed=fixed,
        hooks=dict(options.hooks),
    )
    gpu_families = {f.name for f in families if f.uses_gpu}

    def resources(config: dict) -> dict:
        gpus = options.gpus_per_trial if config.get("model") in gpu_families else 0
        return {"cpu": options.cpus_per_trial, "gpu": gpus}

    trainable = tune.with_resources(tune.with_parameters(train_trial, settings=settings), resources)
    if options.resume and tune.Tuner.can_restore(place.tune_path):
        say(f"resuming {place.tune_path}")
        return tune.Tuner.restore(place.tune_path, trainable=trainable, resume_errored=True).fit()

    searcher, scheduler, stopper = build_search(plans, place.optuna_url, place.name, options)
    total = sum(plan.trials + (plan.paper is not None) for plan in plans)
    refresh = ReportRefresh(str(place.local), mask_url(place.optuna_url))
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            metric=METRIC,
            mode="max",
            num_samples=total,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=place.name,
            storage_path=place.root,
            stop=stopper,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            # Keep the best epoch (for the test evaluation) and, always, the latest (for retries).
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=METRIC, checkpoint_score_order="max"
            ),
            callbacks=[TrialEvents(total, options.max_epochs, on_refresh=refresh)],
            verbose=2 if options.verbose else 0,
        ),
    )
    return tuner.fit()


def trial_name(trial) -> str:
    """Trial folders and names: <model>_<number in its study>_<Tune trial id>."""
    number = trial.config.get("trial")
    return f"{trial.config.get('model', 'trial')}_{number if number is not None else 'x'}_{trial.trial_id}"


def finish(options: SearchOptions, families: list, results, data_dir, place: ExperimentPlace) -> Path:
    """Test evaluation, best/<model>/, the report, the leaderboard on the console and what to run next."""
    from tuning.evaluate import evaluate_winners
    from tuning.report import generate
    from tuning.results import load_experiment
    from tuning.searcher import close_orphaned_trials

    if place.remote:
        say(f"copying {place.remote} (all but checkpoints) down to {place.local} for the report")
        copy_down(place.remote, place.local)
    trials = load_experiment(place.local).trials
    unfinished = [t for t in trials if t.status not in ("finished", "stopped early", "error")]
    errors = [t for t in trials if t.status == "error"]
    if unfinished:
        say(f"search interrupted: {len(unfinished)} trials unfinished; continue with --task {options.task} "
            f"--name {place.name} --resume (the test split is evaluated when the search completes)")
    else:
        say(f"search done: {len(trials)} trials, {len(errors)} failed for good")
        closed = close_orphaned_trials(place.optuna_url, place.name, [f.name for f in families])
        if closed:
            say(f"optuna: {closed} trial(s) left RUNNING by an interrupted driver marked FAIL")
        if options.test:
            say("each family's winner on the test split (evaluated once):")
            evaluate_winners(results, {f.name: f for f in families}, str(data_dir), place.local, options.device,
                             options.cpus_per_trial, options.gpus_per_trial, say=say)
    paths = generate(place.local, place.optuna_url)
    say()
    say(console_leaderboard(paths["leaderboard_md"].read_text()))
    say(f"full leaderboard: {paths['leaderboard_md']}; report: {paths['report_html']}")
    best = best_overall(place.local)
    if best is not None:
        say(f"winners' checkpoints: {place.local / BEST_DIR}/<model>; the best family's, to predict new raw sessions "
            "or train again:")
        say(f"  python -m tuning.predict --checkpoint {best} --raw NEW_LOGS_DIR --out predictions.csv")
        say(f"  python -m tuning.train --config {best} --epochs {options.max_epochs} --test")
    if place.remote:
        uploads = [paths["report_html"], paths["leaderboard_md"], paths["leaderboard_csv"], paths["best_configs"],
                   paths["learning_curves"], paths["learning_curves_overview"], place.local / TEST_DIR,
                   place.local / BEST_DIR]
        if not options.optuna_storage:
            uploads.append(place.local / OPTUNA_FILE)
        for path in uploads:
            if path.exists():
                copy_up(path, f"{place.remote}/{path.relative_to(place.local).as_posix()}")
        say(f"report, test results and best/ copied up to {place.remote}")
    return place.local


def best_overall(local: Path) -> Path | None:
    """best/<model> of the family whose winner has the best val MAA (the leaderboard's first model)."""
    best = None
    for path in sorted((local / TEST_DIR).glob("*.json")):
        row = json.loads(path.read_text())
        if row.get("kind") == "winner" and (local / BEST_DIR / row["model"]).is_dir():
            if best is None or row["val"]["maa"] > best[0]:
                best = (row["val"]["maa"], local / BEST_DIR / row["model"])
    return best[1] if best else None


def console_leaderboard(markdown: str) -> str:
    """The leaderboard's first table and verdicts (the per-position tables and trial list stay in the file)."""
    sections = markdown.split("\n## ")
    return sections[0].rstrip()


def main(argv: list[str] | None = None) -> int:
    # Tune snapshots the experiment state whenever a trial checkpoints (CheckpointConfig(num_to_keep)),
    # which is what --resume relies on; its warning about snapshot frequency is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    try:
        options = parse_options(argv)
        run_search(options)
    except UsageError as error:
        print(f"tuning.search: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tuning.search: interrupted; continue with --resume --name NAME", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
