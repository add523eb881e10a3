"""The training options beyond the paper: MAA position weights, track dropout and the wide
context term (models/inputs.py, models/heads.py), on hand-made cases and tiny batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.models.model_batches import make_batch, make_info, tiny_model

from data_pipeline.schema import FIRST_TRACK_ID, MASK_ID, PAD_ID, SKIP_ID, UNK_ID
from models.heads import OutputHead, WideSkipContext, maa_position_weights
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


def fitted_wide(batch: dict, labels: torch.Tensor, **options) -> WideSkipContext:
    """A wide term fitted alone (L-BFGS) to `labels` on `batch`, uniform weights over real positions."""
    wide = WideSkipContext(categories=make_info().categories, **options)
    wide.fit(wide.summaries(batch), wide.flags(batch), labels, batch["out_mask"].float())
    return wide


def accuracy(wide: WideSkipContext, batch: dict, labels: torch.Tensor) -> float:
    mask = batch["out_mask"]
    with torch.no_grad():
        return (wide(batch).argmax(-1)[mask] == labels[mask]).float().mean().item()


def test_the_wide_term_learns_a_rule_on_the_last_input_tracks_reason_end_only_with_its_categories():
    # every second-half track is skipped exactly when the last first-half track ended with code 2 (the
    # forward button in the real data): no summary of the 0/1 columns says so, the last track's one-hot does
    batch = make_batch(512, "challenge", seed=4)
    rows = torch.arange(512)
    ended = batch["in_reason_end"][rows, batch["n_in"] - 1] == 2
    labels = ended[:, None].expand_as(batch["out_mask"]).long()
    assert accuracy(fitted_wide(batch, labels, last_tracks=1), batch, labels) == 1.0
    assert accuracy(fitted_wide(batch, labels, last_tracks=0), batch, labels) < 0.95


def test_the_wide_term_reads_the_track_before_the_last_when_asked_for_two():
    batch = make_batch(512, "challenge", seed=5)
    rows = torch.arange(512)
    started = batch["in_reason_start"][rows, batch["n_in"] - 2] == 3
    labels = started[:, None].expand_as(batch["out_mask"]).long()
    assert accuracy(fitted_wide(batch, labels, last_tracks=2), batch, labels) == 1.0
    assert accuracy(fitted_wide(batch, labels, last_tracks=1), batch, labels) < 0.95


def test_the_wide_term_learns_the_sessions_last_track():
    # only the session's last second-half track is skipped: a position rule that depends on n_out
    batch = make_batch(512, "challenge", seed=6)
    position = torch.arange(10)[None, :]
    labels = (position == batch["n_out"][:, None] - 1).long()
    assert accuracy(fitted_wide(batch, labels), batch, labels) == 1.0


def test_the_position_penalty_pulls_every_position_to_the_shared_weights():
    # position 0 copies the last skip, the other positions invert it: per-position weights fit it, a
    # heavy penalty on their deviations leaves one rule for all positions (right on most positions only)
    batch = make_batch(512, "challenge", seed=7)
    rows = torch.arange(512)
    last_skip = batch["in_skip_2"][rows, batch["n_in"] - 1]
    labels = (1 - last_skip)[:, None].expand_as(batch["out_mask"]).clone()
    labels[:, 0] = last_skip
    free = fitted_wide(batch, labels, position_l2=1e-4)
    tied = fitted_wide(batch, labels, position_l2=1e3)
    assert accuracy(free, batch, labels) == 1.0
    assert tied.per_position.abs().max() < 1e-2
    assert (tied(batch).argmax(-1)[:, 0] == labels[:, 0]).float().mean() < 0.6


def test_fit_wide_fits_the_heads_wide_term_to_the_training_batches():
    batch = make_batch(512, "challenge", seed=8)
    rows = torch.arange(512)
    labels = (batch["in_reason_end"][rows, batch["n_in"] - 1] == 2)[:, None].expand_as(batch["out_mask"]).long()
    batch = {**batch, "out_skip_2": labels}
    config = get_model("lstm").make_config({"use_context": True, "position_weights": "maa"})
    head = OutputHead(8, "skip", make_info(), config)
    halves = [{k: v[:256] for k, v in batch.items()}, {k: v[256:] for k, v in batch.items()}]
    head.fit_wide(iter(halves))
    assert accuracy(head.wide, batch, labels) == 1.0
