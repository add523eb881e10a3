"""The training options beyond the paper: MAA position weights, track dropout and the wide
context term (models/inputs.py, models/heads.py), on hand-made cases and tiny batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.models.model_batches import make_batch, make_info, tiny_model

from data_pipeline.schema import FIRST_TRACK_ID, MASK_ID, PAD_ID, SKIP_ID, UNK_ID
from models.heads import WideSkipContext, maa_position_weights
from models.inputs import drop_tracks
from models.metrics import mean_average_accuracy
from models.registry import get_model


def test_maa_weights_are_the_hand_computed_error_costs_and_sum_to_one_per_session():
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    cost = torch.tensor([1 + 1 / 2 + 1 / 3, 1 + 1 / 3, 1.0])
    expected = torch.tensor([[*(cost / cost.sum()).tolist(), 0.0], [1.0, 0, 0, 0]])
    torch.testing.assert_close(maa_position_weights(mask), expected)


@pytest.mark.parametrize("n", [1, 3, 5, 10])
def test_maa_weights_are_proportional_to_what_one_error_costs_the_metric(n):
    truth = np.ones((n, 10), dtype=int)
    pred = truth.copy()
    pred[np.arange(n), np.arange(n)] = 0  # session j errs at position j only
    mask = np.zeros((n, 10), dtype=bool)
    mask[:, :n] = True
    costs = np.array([1.0 - mean_average_accuracy(pred[j : j + 1], truth[j : j + 1], mask[j : j + 1]) for j in range(n)])
    weights = maa_position_weights(torch.as_tensor(mask[:1])).numpy()[0, :n]
    np.testing.assert_allclose(weights, costs / costs.sum(), rtol=1e-6)
    if n == 5:  # FACTS.md's worked example: AA 0.543 .. 0.800
        np.testing.assert_allclose(1 - costs, [0.543, 0.643, 0.710, 0.760, 0.800], atol=5e-4)


def test_maa_position_weights_change_the_skip_loss_to_the_weighted_cross_entropy():
    info = make_info()
    batch = make_batch(6, "challenge", seed=1)
    uniform = tiny_model("lstm", "skip", info, seed=0)
    weighted = tiny_model("lstm", "skip", info, seed=0, position_weights="maa")
    weighted.load_state_dict(uniform.state_dict())
    uniform.eval(), weighted.eval()
    logits, loss_uniform = uniform(batch)
    _, loss_weighted = weighted(batch)
    per_position = F.cross_entropy(logits.flatten(0, 1), batch["out_skip_2"].flatten(), reduction="none").view(6, 10)
    w = maa_position_weights(batch["out_mask"])
    torch.testing.assert_close(loss_weighted, (per_position * w).sum() / w.sum())
    mask = batch["out_mask"].float()
    torch.testing.assert_close(loss_uniform, (per_position * mask).sum() / mask.sum())


def test_track_dropout_replaces_only_real_track_ids_by_unk_at_about_its_rate():
    torch.manual_seed(0)
    tokens = torch.randint(FIRST_TRACK_ID, 1000, (200, 10))
    tokens[:, 0] = PAD_ID
    tokens[:, 1] = SKIP_ID
    tokens[:, 2] = MASK_ID
    dropped = drop_tracks(tokens, 0.3)
    assert torch.equal(dropped[:, :3], tokens[:, :3])  # reserved ids are never dropped
    changed = dropped[:, 3:] != tokens[:, 3:]
    assert (dropped[:, 3:][changed] == UNK_ID).all()
    assert changed.float().mean().item() == pytest.approx(0.3, abs=0.03)
    assert torch.equal(drop_tracks(tokens, 0.0), tokens)


def test_track_dropout_acts_in_training_only():
    info = make_info()
    batch = make_batch(8, "challenge", seed=2)
    model = tiny_model("lstm", "skip", info, seed=0, track_dropout=0.9, dropout=0.0)
    model.eval()
    first, _ = model(batch)
    second, _ = model(batch)
    torch.testing.assert_close(first, second)  # evaluation sees every track id
    model.train()
    torch.manual_seed(1)
    trained, _ = model(batch)
    assert not torch.allclose(trained, first)


def test_bad_values_of_the_new_options_are_rejected_with_a_sentence():
    with pytest.raises(ValueError, match="position_weights = 'late'"):
        get_model("lstm").make_config({"position_weights": "late"})
    with pytest.raises(ValueError, match=r"track_dropout = 1.0: must be in \[0, 1\)"):
        get_model("transformer").make_config({"track_dropout": 1.0})


def test_the_wide_term_exists_only_for_skip_with_context_and_starts_at_zero():
    info = make_info()
    with_wide = tiny_model("lstm", "skip", info, use_context=True)
    assert isinstance(with_wide.head.wide, WideSkipContext)
    assert tiny_model("lstm", "skip", info, use_context=True, wide_context=False).head.wide is None
    assert tiny_model("lstm", "skip", info).head.wide is None
    assert tiny_model("lstm", "seq", info, use_context=True).head.wide is None
    batch = make_batch(4, "challenge")
    assert torch.count_nonzero(with_wide.head.wide(batch)) == 0


def test_the_wide_term_alone_learns_to_copy_the_last_skip_and_to_use_repeated_tracks():
    # labels: position 0 copies the last first-half skip; later positions are 1 exactly when the
    # track was already played in the first half. Only a term that reads both can fit them.
    torch.manual_seed(0)
    batch = make_batch(256, "challenge", seed=3)
    rows = torch.arange(256)
    last_skip = batch["in_skip_2"][rows, batch["n_in"] - 1]
    out_tracks = batch["out_tracks"].clone()
    repeat = torch.rand(out_tracks.shape) < 0.5
    repeat[:, 0] = False
    out_tracks = torch.where(repeat, batch["in_tracks"][:, :1].expand_as(out_tracks), out_tracks + 1000)
    batch = {**batch, "out_tracks": out_tracks}
    labels = repeat.long()
    labels[:, 0] = last_skip
    wide = WideSkipContext()
    optimizer = torch.optim.Adam(wide.parameters(), lr=0.1)
    mask = batch["out_mask"]
    for _ in range(300):
        logits = wide(batch)
        loss = F.cross_entropy(logits[mask], labels[mask])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pred = wide(batch).argmax(-1)
    assert (pred[:, 0] == labels[:, 0]).float().mean() == 1.0
    assert (pred[:, 1:][mask[:, 1:]] == labels[:, 1:][mask[:, 1:]]).float().mean() == 1.0
