"""`python -m tuning.predict`: a checkpoint scores new raw MSSD files on its own."""

import csv

import pandas as pd
import pyarrow.parquet as pq
import pytest

from data_pipeline.dataset import open_prepared
from tuning.predict import main as predict_main
from tuning.families import make_trainer


@pytest.fixture(scope="module")
def skip_checkpoint(synthetic_prepared, tmp_path_factory):
    """A tiny LSTM trained one epoch on the skip task (challenge protocol), saved; and its val metrics."""
    trainer = make_trainer("skip", "lstm", {"lr": 3e-3, "hidden_size": 32, "embedding_dim": 32, "batch_size": 128},
                           synthetic_prepared, protocol="challenge", device="cpu", input_path="memory")
    trainer.train_epoch()
    directory = trainer.save(tmp_path_factory.mktemp("ckpt") / "checkpoint")
    return directory, trainer.evaluate("val")


def raw_subset(raw_dir, session_ids, out_dir, edit=None):
    """Copy the raw log rows of `session_ids` into `out_dir`, optionally editing the frame."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(raw_dir.glob("log_*")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame = frame[frame.session_id.isin(session_ids)]
        if edit is not None:
            frame = edit(frame)
        frame.to_csv(out_dir / path.name.replace(".gz", ""), index=False)
    return out_dir


def val_session_ids(prepared):
    return set(open_prepared(prepared).numpy_split("val", "challenge")["session_id"].tolist())


def test_predict_on_the_raw_val_sessions_reproduces_the_trainers_val_maa(
    skip_checkpoint, synthetic_raw, synthetic_prepared, tmp_path, capsys
):
    checkpoint, val = skip_checkpoint
    raw = raw_subset(synthetic_raw, val_session_ids(synthetic_prepared), tmp_path / "raw")
    out = tmp_path / "pred.csv"
    assert predict_main(["--checkpoint", str(checkpoint), "--raw", str(raw), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert f"MAA {val['maa']:.4f}" in printed
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == val["sessions"]
    first = rows[0]
    n_out = int(first["n_out"])
    assert all(first[f"pred_{t}"] in ("0", "1") for t in range(1, n_out + 1))
    assert all(first[f"pred_{t}"] == "" for t in range(n_out + 1, 11))


def test_unseen_tracks_become_unknown_and_parquet_output_works(skip_checkpoint, synthetic_raw, synthetic_prepared, tmp_path, capsys):
    checkpoint, _ = skip_checkpoint
    ids = sorted(val_session_ids(synthetic_prepared))[:20]

    def rename_tracks(frame):
        frame = frame.copy()
        frame["track_id_clean"] = "never_seen_" + frame["track_id_clean"]
        return frame

    raw = raw_subset(synthetic_raw, ids, tmp_path / "raw", rename_tracks)
    out = tmp_path / "pred.parquet"
    assert predict_main(["--checkpoint", str(checkpoint), "--raw", str(raw), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    table = pq.read_table(out)
    assert table.num_rows == 20
    rows = sum(len(pd.read_csv(p)) for p in raw.glob("log_*"))
    assert f"{rows:,} of {rows:,} track plays unknown" in printed


def test_missing_second_half_labels_give_predictions_without_metrics(skip_checkpoint, synthetic_raw, synthetic_prepared, tmp_path, capsys):
    checkpoint, _ = skip_checkpoint
    ids = sorted(val_session_ids(synthetic_prepared))[:10]

    def hide_labels(frame):
        frame = frame.copy()
        second_half = 2 * frame.session_position.astype(int) > frame.session_length.astype(int)
        for column in ("skip_1", "skip_2", "skip_3", "not_skipped"):
            frame.loc[second_half, column] = ""
        return frame

    raw = raw_subset(synthetic_raw, ids, tmp_path / "raw", hide_labels)
    out = tmp_path / "pred.csv"
    assert predict_main(["--checkpoint", str(checkpoint), "--raw", str(raw), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "labels are missing: no metrics" in printed and "MAA" not in printed
    assert len(list(csv.DictReader(out.open()))) == 10


def test_predict_fails_with_one_line_for_a_missing_checkpoint(tmp_path, capsys):
    code = predict_main(["--checkpoint", str(tmp_path / "nope"), "--raw", str(tmp_path), "--out", str(tmp_path / "p.csv")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "no such checkpoint directory" in err and "\n" not in err


def test_a_ddpg_checkpoint_predicts_new_raw_sessions_with_its_fitted_threshold(
    synthetic_raw, synthetic_prepared, tmp_path, ray_session
):
    tiny = {"hidden_size": 16, "embedding_size": 8, "batch_size": 32, "learning_starts": 40, "num_envs": 8,
            "sessions_per_epoch": 40, "training_intensity": 1.0, "buffer_size": 2000}
    trainer = make_trainer("skip", "ddpg", tiny, synthetic_prepared, protocol="challenge",
                           cache_dir=tmp_path / "cache")
    trainer.train_epoch()
    expected = trainer.evaluate("val")  # fits the skip threshold the checkpoint keeps
    checkpoint = trainer.save(tmp_path / "ddpg_ckpt")
    trainer.algo.stop()
    raw = raw_subset(synthetic_raw, val_session_ids(synthetic_prepared), tmp_path / "raw")
    out = tmp_path / "ddpg.csv"
    assert predict_main(["--checkpoint", str(checkpoint), "--raw", str(raw), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == expected["sessions"]
    from tuning.predict import predict

    result = predict(checkpoint, [raw], tmp_path / "again.csv")
    assert result["metrics"]["maa"] == pytest.approx(expected["maa"])


class _TouchOnLoad:
    """A pickled object that, when unpickled, creates a file: what a hostile checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_checkpoint_holding_code_is_refused_without_running_it(skip_checkpoint, synthetic_raw, tmp_path, capsys):
    import shutil

    import torch

    checkpoint, _ = skip_checkpoint
    hostile = tmp_path / "hostile"
    shutil.copytree(checkpoint, hostile)
    marker = tmp_path / "code-ran"
    torch.save({"model": _TouchOnLoad(marker)}, hostile / "checkpoint.pt")
    out = tmp_path / "pred.csv"
    assert predict_main(["--checkpoint", str(hostile), "--raw", str(synthetic_raw), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert not marker.exists()
    assert err.count("\n") == 0 and str(hostile / "checkpoint.pt") in err
    assert not out.exists()


def test_a_truncated_checkpoint_fails_with_one_line_naming_the_file(skip_checkpoint, synthetic_raw, tmp_path, capsys):
    import shutil

    checkpoint, _ = skip_checkpoint
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    data = (broken / "checkpoint.pt").read_bytes()
    (broken / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    assert predict_main(["--checkpoint", str(broken), "--raw", str(synthetic_raw), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(broken / "checkpoint.pt") in err


def test_a_vocabulary_from_another_dataset_is_refused(skip_checkpoint, synthetic_raw, tmp_path, capsys):
    import shutil

    import pyarrow as pa

    checkpoint, _ = skip_checkpoint
    swapped = tmp_path / "swapped"
    shutil.copytree(checkpoint, swapped)
    vocab = pq.read_table(swapped / "vocab.parquet")
    ids = vocab.column("track_id").to_pylist()
    ids[4], ids[5] = ids[5], ids[4]  # same size, two tracks swapped: predictions would silently be wrong
    pq.write_table(vocab.set_column(0, "track_id", pa.array(ids)), swapped / "vocab.parquet")
    assert predict_main(["--checkpoint", str(swapped), "--raw", str(synthetic_raw), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(swapped / "vocab.parquet") in err and "not the file this checkpoint" in err


def test_one_empty_label_cell_leaves_only_its_session_unscored(skip_checkpoint, synthetic_raw, synthetic_prepared, tmp_path, capsys):
    checkpoint, _ = skip_checkpoint
    ids = sorted(val_session_ids(synthetic_prepared))[:10]

    def hide_one_label(frame):
        frame = frame.copy()
        last = frame.index[(frame.session_id == ids[0]) & (frame.session_position.astype(int) == frame.session_length.astype(int))]
        frame.loc[last, "skip_2"] = ""
        return frame

    raw = raw_subset(synthetic_raw, ids, tmp_path / "raw", hide_one_label)
    assert predict_main(["--checkpoint", str(checkpoint), "--raw", str(raw), "--out", str(tmp_path / "p.csv"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "1 sessions with an empty skip_2 cell (hidden labels) predicted but not scored" in printed
    assert "sessions scored 9" in printed and "MAA " in printed
