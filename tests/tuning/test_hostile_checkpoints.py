"""`tuning.predict` over damaged and hostile checkpoint folders: one line naming what is wrong, never a traceback.

Property-based: Hypothesis damages a real checkpoint (files missing, truncated, replaced by
random bytes, JSON fields changed to other types and values, weights from another model)
and every damaged folder must end in exit status 2 with exactly one error line that names
the checkpoint, and must never run code from it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuning.families import make_trainer
from tuning.predict import main as predict_main

FILES = ("trainer.json", "checkpoint.pt", "vocab.parquet", "categories.json", "manifest.json", "track_features.npy")


@pytest.fixture(scope="module")
def checkpoints(synthetic_prepared, synthetic_raw, tmp_path_factory):
    """A tiny skip LSTM and a tiny seq transformer checkpoint, and a folder of 8 raw sessions."""
    root = tmp_path_factory.mktemp("hostile")
    tiny = {"hidden_size": 8, "embedding_dim": 8, "batch_size": 256}
    skip = make_trainer("skip", "lstm", tiny, synthetic_prepared, protocol="challenge", device="cpu", input_path="memory")
    skip.train_epoch()
    seq = make_trainer("seq", "transformer", {"embedding_dim": 8, "num_heads": 2, "ffn_dim": 8, "num_layers": 1},
                       synthetic_prepared, protocol="challenge", device="cpu", input_path="memory")
    raw = root / "raw"
    raw.mkdir()
    first = sorted(synthetic_raw.glob("log_*"))[0]
    frame = pd.read_csv(first, dtype=str, keep_default_na=False)
    frame[frame.session_id.isin(sorted(set(frame.session_id))[:8])].to_csv(raw / first.name.replace(".gz", ""), index=False)
    return skip.save(root / "skip"), seq.save(root / "seq"), raw


DAMAGES = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(FILES)),
    st.tuples(st.just("truncate"), st.sampled_from(FILES), st.floats(0.0, 0.95)),
    st.tuples(st.just("garbage"), st.sampled_from(FILES), st.binary(min_size=0, max_size=64)),
    st.tuples(st.just("state"), st.sampled_from(["task", "model", "config", "protocol", "epoch", "seed"]),
              st.one_of(st.none(), st.integers(-5, 10**6), st.text(max_size=8), st.just([]), st.just({}))),
    st.tuples(st.just("config"), st.sampled_from(["hidden_size", "embedding_dim", "lr", "dropout", "loss", "wings"]),
              st.one_of(st.none(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=5))),
    st.tuples(st.just("foreign_weights")),
)


def damage(folder: Path, seq_folder: Path, how: tuple) -> None:
    kind = how[0]
    if kind == "delete":
        (folder / how[1]).unlink()
    elif kind == "truncate":
        data = (folder / how[1]).read_bytes()
        (folder / how[1]).write_bytes(data[: int(len(data) * how[2])])
    elif kind == "garbage":
        (folder / how[1]).write_bytes(how[2])
    elif kind in ("state", "config"):
        state = json.loads((folder / "trainer.json").read_text())
        if kind == "state":
            state[how[1]] = how[2]
        else:
            state["config"][how[1]] = how[2]
        (folder / "trainer.json").write_text(json.dumps(state))
    else:  # another model's weights under this trainer.json: a seq transformer's checkpoint.pt
        shutil.copyfile(seq_folder / "checkpoint.pt", folder / "checkpoint.pt")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=DAMAGES)
def test_a_damaged_checkpoint_ends_in_one_line_naming_it(checkpoints, tmp_path_factory, how, capsys):
    skip, seq, raw = checkpoints
    work = tmp_path_factory.mktemp("damaged")
    folder = work / "checkpoint"
    shutil.copytree(skip, folder)
    damage(folder, seq, how)
    out = work / "pred.csv"
    code = predict_main(["--checkpoint", str(folder), "--raw", str(raw), "--out", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    if code == 0:
        # harmless damage (e.g. an unused field changed to a value that still works): predictions were written
        assert out.exists() and "Traceback" not in captured.err
        return
    assert code == 2, (how, captured.err)
    err = captured.err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, (how, err)
    assert str(folder) in err, (how, err)
    assert not out.exists()


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("name", ["checkpoint.pt", "track_features.npy"])
def test_no_file_of_a_checkpoint_is_unpickled(checkpoints, tmp_path, name, capsys):
    import numpy as np

    skip, _, raw = checkpoints
    folder = tmp_path / "checkpoint"
    shutil.copytree(skip, folder)
    marker = tmp_path / "code-ran"
    if name == "checkpoint.pt":
        torch.save({"model": _RunsCode(marker)}, folder / name)
    else:
        np.save(folder / name, np.array([_RunsCode(marker)], dtype=object), allow_pickle=True)
    assert predict_main(["--checkpoint", str(folder), "--raw", str(raw), "--out", str(tmp_path / "p.csv")]) == 2
    assert not marker.exists()
    assert str(folder) in capsys.readouterr().err
