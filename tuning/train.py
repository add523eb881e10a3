"""Train one configuration of one model: `python -m tuning.train --task skip --model lstm`.

Trains on the prepared train split (streamed through Ray Data), evaluates on
val after every epoch, writes a checkpoint directory and ``metrics.json``
(per-epoch history, final val, test with ``--test``, the simple baselines for
reference) under ``--out``, and prints a table. Without ``--data`` it uses the
embedded synthetic dataset (generated and prepared on first use).

The configuration starts from the family's start configuration for the task
(the paper's architecture at a learning rate that learns within a few epochs;
``--paper`` starts from the paper's own configuration instead, lr 1e-5 for skip
and 1e-4 for seq), then ``--config`` (a JSON/YAML mapping, a search's
``best_configs/<model>.json``, or a checkpoint directory such as a search's
``best/<model>/``), then each ``--set key=value``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from tuning.families import FAMILIES, get_family


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tuning.train",
        description="Train and evaluate one model configuration on a prepared MSSD dataset.",
    )
    parser.add_argument("--task", choices=["skip", "seq"], help="skip prediction or next-10-tracks (default: from --config)")
    parser.add_argument("--model", help=f"model name ({', '.join(FAMILIES)})")
    parser.add_argument("--data", type=Path, help="prepared dataset directory (default: the embedded synthetic set)")
    parser.add_argument("--config", type=Path, help="JSON or YAML config file, a best_configs/<model>.json of a search, "
                        "or a checkpoint directory (e.g. a search's best/<model>)")
    parser.add_argument("--paper", action="store_true", help="start from the paper's configuration of the model "
                        "instead of its start configuration")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field, e.g. --set lr=1e-3 (repeatable)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default 5, the paper's maximum)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: cuda when present")
    parser.add_argument("--protocol", default="paper", choices=["paper", "challenge"],
                        help="paper: 20-track sessions, 10 in / 10 out; challenge: all sessions, T = ceil(L/2)")
    parser.add_argument("--beam", type=int, default=1, help="beam size for seq decoding at evaluation (1 = greedy)")
    parser.add_argument("--test", action="store_true", help="also evaluate the final model on the test split")
    parser.add_argument("--out", type=Path, help="output directory (default: runs/<task>-<model>-<time>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input-path", default="ray", choices=["ray", "memory"],
                        help="stream the train split through Ray Data (default) or hold it in memory")
    parser.add_argument("--no-baselines", action="store_true", help="skip scoring the simple baselines")
    parser.add_argument("--cache-dir", type=Path, help="cache for pre-trained embeddings (default: DATA/cache)")
    return parser


def resolve_run(args) -> tuple[str, str, dict]:
    """Task, model and the full config dict from the defaults, --config and --set."""
    from tuning.config_io import load_config_file, parse_overrides

    file_config, file_task, file_model = ({}, None, None)
    if args.config is not None:
        file_config, file_task, file_model = load_config_file(args.config)
    task = args.task or file_task
    model = args.model or file_model
    if task is None or model is None:
        raise ValueError("say which task and model to train: --task skip|seq --model NAME (or a best_configs file)")
    if file_task and args.task and file_task != args.task:
        raise ValueError(f"{args.config} is a config for task {file_task!r}, not {args.task!r}")
    if file_model and args.model and file_model != args.model:
        raise ValueError(f"{args.config} is a config for model {file_model!r}, not {args.model!r}")
    family = get_family(model)
    if task not in family.tasks:
        raise ValueError(f"model {model!r} does not support task {task!r} (it supports {', '.join(family.tasks)})")
    config = dict((family.paper_configs if args.paper else family.start_configs).get(task, {}))
    config.update(file_config)
    config.update(parse_overrides(args.overrides))
    if args.beam != 1:
        config["beam_size"] = args.beam
    return task, model, config


def format_table(rows: list[tuple[str, dict, dict | None]]) -> str:
    """Markdown table: name, val MAA, val first-position accuracy, val loss, test MAA."""
    lines = ["| method | val MAA | val first acc | val loss | test MAA |", "|---|---|---|---|---|"]
    for name, val, test in rows:
        loss = val.get("loss")
        loss_text = f"{loss:.4f}" if loss is not None and loss == loss else "-"
        test_text = f"{test['maa']:.4f}" if test else "-"
        lines.append(f"| {name} | {val['maa']:.4f} | {val['first_accuracy']:.4f} | {loss_text} | {test_text} |")
    return "\n".join(lines)


def run(args) -> dict:
    from data_pipeline.dataset import open_prepared
    from data_pipeline.ray_runtime import init_ray
    from models.baselines import BASELINES
    from tuning.evaluate import evaluate_baseline
    from tuning.families import make_trainer

    task, model, config = resolve_run(args)
    if args.data is None:
        from data_pipeline.default import default_dataset

        data_dir = Path(default_dataset())
    else:
        data_dir = args.data
        if not data_dir.is_dir():
            raise FileNotFoundError(
                f"{data_dir}: no such prepared dataset directory; prepare one with "
                f"`python -m data_pipeline.prepare --raw RAW_DIR --out {data_dir}`"
            )
    dataset = open_prepared(data_dir)
    if args.epochs < 1:
        raise ValueError(f"--epochs {args.epochs}: train at least one epoch")
    out = args.out or Path("runs") / f"{task}-{model}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)

    if args.input_path == "ray":
        init_ray()
    if "show_progress" in get_family(model).fields:  # a progress bar where the trainer has one
        config["show_progress"] = True
    trainer = make_trainer(task, model, config, data_dir, protocol=args.protocol, device=args.device,
                           seed=args.seed, input_path=args.input_path, cache_dir=args.cache_dir)
    print(f"{model} on {task} ({args.protocol} protocol): {trainer.num_parameters:,} parameters, "
          f"data {data_dir}", flush=True)
    start = time.perf_counter()
    history = []
    for _ in range(args.epochs):
        epoch = trainer.train_epoch()
        val = trainer.evaluate("val")
        history.append({**epoch, "val": val})
        print(f"epoch {epoch['epoch']}: train loss {epoch['train_loss']:.4f}, "
              f"{epoch['sessions_per_s']:.0f} sessions/s, val MAA {val['maa']:.4f}, "
              f"val loss {val.get('loss', float('nan')):.4f}", flush=True)
    final = {"val": history[-1]["val"]}
    if args.test:
        final["test"] = trainer.evaluate("test")
    trainer.save(out / "checkpoint")

    baselines = {}
    if not args.no_baselines:
        for name in BASELINES[task]:
            baselines[name] = {"val": evaluate_baseline(task, name, data_dir, "val", args.protocol)}
            if args.test:
                baselines[name]["test"] = evaluate_baseline(task, name, data_dir, "test", args.protocol)

    metrics = {
        "task": task,
        "model": model,
        "protocol": args.protocol,
        "config": trainer.config_dict(),
        "data": str(Path(data_dir).resolve()),
        "data_fingerprint": dataset.fingerprint,
        "num_parameters": trainer.num_parameters,
        "seed": args.seed,
        "epochs": history,
        "final": final,
        "baselines": baselines,
        "seconds": time.perf_counter() - start,
        "checkpoint": str((out / "checkpoint").resolve()),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    rows = [(model, final["val"], final.get("test"))]
    rows += [(f"baseline {name}", b["val"], b.get("test")) for name, b in baselines.items()]
    print(format_table(rows))
    print(f"wrote {out / 'metrics.json'} and {out / 'checkpoint'}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    from tuning.trainer import NonFiniteLoss

    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError, KeyError, NonFiniteLoss) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
