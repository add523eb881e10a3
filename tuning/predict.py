"""Score new raw MSSD sessions with a trained checkpoint.

    python -m tuning.predict --checkpoint experiments/<name>/best/lstm --raw new_logs/ --out predictions.csv

Reads raw session logs (``log_*.csv[.gz]`` / ``.parquet`` files, or a folder of
them) in the 21-column MSSD format, turns rows into sessions with the same code
as ``data_pipeline.prepare`` (``data_pipeline.encoding.sessions_from_raw``), and encodes them with
the checkpoint's own vocabulary and categories: tracks the model never saw
become ``<unk>``. Each session is cut into halves by the protocol (the
checkpoint's by default) and the model predicts the second half.

Writes one row per session: ``session_id``, ``n_in``, ``n_out`` and
``pred_1`` .. ``pred_10`` (skip task: 1 = skipped; seq task: the predicted
track ids as in the raw files, ``<unk>`` never predicted by a well-trained
model), empty beyond ``n_out``. CSV or parquet by the ``--out`` extension.

When the second half's labels are present (skip_2 for skip, track ids for
seq), prints MAA and the other metrics over the sessions that have them. Rows
whose skip / interaction columns are empty (as in the WSDM Cup's hidden second
halves) are accepted: those cells are read as 0 / false, and a session with an
empty skip_2 cell is predicted and counted, not scored.

Every model family's checkpoints work (tuning.families restores them); a
checkpoint holds no pickled objects, so loading one runs no code from it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from data_pipeline.dataset import PROTOCOLS, iter_numpy_batches, split_halves, table_to_batch
from data_pipeline.encoding import sessions_from_raw
from data_pipeline.schema import FIRST_TRACK_ID, UNK_ID, SchemaError
from models.metrics import evaluate_predictions


def write_predictions(path: Path, session_ids, n_in, n_out, pred: np.ndarray, mask: np.ndarray, task: str,
                      vocab_track_ids: np.ndarray) -> None:
    columns = {"session_id": pa.array(session_ids, pa.string()), "n_in": pa.array(n_in), "n_out": pa.array(n_out)}
    for t in range(pred.shape[1]):
        values = pred[:, t]
        array = pa.array(values if task == "skip" else vocab_track_ids[values], mask=~mask[:, t])
        columns[f"pred_{t + 1}"] = array
    table = pa.table(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        pacsv.write_csv(table, path)


def restore_checkpoint(checkpoint: Path, device: str):
    """The trainer of a checkpoint directory (any family; see tuning.families), for prediction only.

    Every checkpoint carries the vocabulary, categories and track features it was
    trained with (models.checkpoint.DATA_FILES), checked against the hashes its
    trainer.json recorded; nothing in it is unpickled.
    """
    from tuning.families import restore_trainer

    return restore_trainer(checkpoint, data_dir=None, device=device)


def predict(checkpoint: Path, raw: list[Path], out: Path, protocol: str | None = None, beam: int | None = None,
            device: str = "auto", batch_size: int = 1024) -> dict:
    """Predict every session of `raw`; returns counts and (when labels are present) the metrics."""
    if out.suffix not in (".csv", ".parquet"):
        raise ValueError(f"--out {out}: name a .csv or .parquet file")
    trainer = restore_checkpoint(checkpoint, device)
    protocol = protocol or trainer.protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    vocab = pq.read_table(Path(checkpoint) / "vocab.parquet").column("track_id").combine_chunks()
    categories = json.loads((Path(checkpoint) / "categories.json").read_text())

    new = sessions_from_raw(raw, vocab.slice(FIRST_TRACK_ID), categories)
    sessions = new.sessions
    everything = table_to_batch(sessions)
    lengths = everything["length"].astype(np.int64)
    played = np.arange(everything["tracks"].shape[1])[None, :] < lengths[:, None]
    unknown = int(((everything["tracks"] == UNK_ID) & played).sum())  # counted before the protocol leaves any out
    batch = split_halves(everything, protocol)
    run = trainer.predict_batches(iter_numpy_batches(batch, batch_size), beam_size=beam)
    write_predictions(out, batch.get("session_id", np.zeros(0, str)), batch["n_in"], batch["n_out"], run["pred"],
                      run["mask"], trainer.task, np.asarray(vocab.to_pylist(), dtype=object))
    result = {
        "files": len(new.files),
        "rows": new.rows,
        "sessions": sessions.num_rows,
        "predicted": int(len(batch["length"])),
        "left_out_by_protocol": int(sessions.num_rows - len(batch["length"])),
        "dropped": new.dropped,
        "unknown_tracks": unknown,
        "plays": int(lengths.sum()),
        "protocol": protocol,
    }
    # Sessions with an empty label cell (hidden second halves) are predicted, not scored; the others are.
    scored = np.ones(len(batch["length"]), dtype=bool)
    if trainer.task == "skip" and new.unlabelled:
        scored = ~np.isin(batch["session_id"].astype(str), list(new.unlabelled))
    result["unscored"] = int((~scored).sum())
    if scored.any():
        top = run.get("top")
        result["metrics"] = evaluate_predictions(
            run["pred"][scored], run["truth"][scored], run["mask"][scored],
            loss=run["loss"] if scored.all() else None, top=top[scored] if top is not None else None,
        )
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tuning.predict",
        description="Predict the second half of new raw MSSD sessions with a trained checkpoint.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory: a search's "
                        "best/<model>, or tuning.train's <out>/checkpoint")
    parser.add_argument("--raw", type=Path, nargs="+", required=True, help="log files or folders of them (MSSD format)")
    parser.add_argument("--protocol", choices=list(PROTOCOLS), help="default: the protocol the model was trained with")
    parser.add_argument("--beam", type=int, help="beam size for seq decoding (default: the checkpoint's, greedy)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", type=Path, required=True, help="output file, .csv or .parquet")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = predict(args.checkpoint, args.raw, args.out, args.protocol, args.beam, args.device)
    except (ValueError, FileNotFoundError, SchemaError) as error:
        print(f"tuning.predict: error: {error}", file=sys.stderr)
        return 2
    dropped = ", ".join(f"{k} {v}" for k, v in result["dropped"].items()) or "none"
    print(f"{result['rows']:,} rows -> {result['sessions']:,} sessions (dropped: {dropped}); "
          f"{result['predicted']:,} predicted under the {result['protocol']} protocol "
          f"({result['left_out_by_protocol']:,} left out by it); {result['unknown_tracks']:,} of "
          f"{result['plays']:,} track plays unknown to the model")
    metrics = result.get("metrics")
    if result["unscored"]:
        print(f"{result['unscored']:,} sessions with an empty skip_2 cell (hidden labels) predicted but not scored")
    if metrics:
        loss = f"  loss {metrics['loss']:.4f}" if "loss" in metrics else ""
        print(f"MAA {metrics['maa']:.4f}  first-position accuracy {metrics['first_accuracy']:.4f}{loss}  "
              f"sessions scored {metrics['sessions']:,}")
        print("accuracy at position: " + " ".join(f"{a:.3f}" for a in metrics["accuracy_at"]))
        print("sessions with k correct (k=0..10): " + " ".join(str(c) for c in metrics["correct_histogram"]))
        if "recall_at_10" in metrics:
            print(f"Recall@10 {metrics['recall_at_10']:.4f}  NDCG@10 {metrics['ndcg_at_10']:.4f}  "
                  f"MRR@10 {metrics['mrr_at_10']:.4f}")
    elif result["predicted"]:
        print("second-half labels are missing: no metrics")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
