"""Every model family: registry contract, both tasks under both protocols, checkpoints,
causality, padding, reserved ids, determinism, and that each one can learn."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tests.models.model_batches import DECODER_MODELS, VOCAB_SIZE, make_batch, make_info, tiny_model

from data_pipeline.schema import FIRST_TRACK_ID, MASK_ID, PAD_ID, SKIP_ID
from models.data import DataInfo
from models.heads import log_uniform_log_q, log_uniform_sample
from models.inputs import encoder_tokens, shifted_targets
from models.registry import MODELS, SEARCH_SPACE_KINDS, config_to_dict, get_model

ALL_MODELS = tuple(MODELS)
TASKS = ("skip", "seq")


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------


def test_registry_holds_the_six_paper_families_for_both_tasks():
    assert set(MODELS) == {"lstm", "lstm_w2v", "bigru", "transformer", "bert", "bert_fused"}
    for name, spec in MODELS.items():
        assert spec.name == name
        assert spec.tasks == ("skip", "seq")
        assert set(spec.paper_configs) == {"skip", "seq"}


def test_get_model_names_the_known_models_when_the_name_is_unknown():
    with pytest.raises(ValueError, match="unknown model 'gpt'.*lstm, lstm_w2v, bigru, transformer, bert, bert_fused"):
        get_model("gpt")


def test_pretraining_step_exists_exactly_for_word2vec_and_bert_families():
    assert {n for n, s in MODELS.items() if s.pretrain is not None} == {"lstm_w2v", "bigru", "bert", "bert_fused"}


@pytest.mark.parametrize("name", ALL_MODELS)
def test_search_space_is_plain_data_over_config_fields_and_holds_the_paper_configs(name):
    spec = get_model(name)
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    for key, dist in spec.search_space.items():
        assert key in fields, f"{name}: search-space key {key} is not a config field"
        assert dist[0] in SEARCH_SPACE_KINDS
    for task, paper in spec.paper_configs.items():
        assert set(paper) <= set(spec.search_space), f"{name}/{task}: paper config keys outside the space"
        for key, value in paper.items():
            kind, *args = spec.search_space[key]
            if kind == "choice":
                assert value in args[0]
            elif kind == "randint":
                assert args[0] <= value < args[1]
            else:
                assert args[0] <= value <= args[1]
        spec.make_config(task=task)  # the paper's config is a valid config


def test_paper_values_are_the_defaults_and_paper_configs():
    lstm = get_model("lstm").make_config(task="skip")
    assert (lstm.hidden_size, lstm.num_layers, lstm.lr, lstm.batch_size, lstm.skip_padding) == (512, 1, 1e-5, 256, True)
    assert get_model("lstm").make_config(task="seq").lr == 1e-4
    t = get_model("transformer").make_config()
    assert (t.num_layers, t.num_heads, t.embedding_dim, t.dropout) == (2, 2, 256, 0.2)
    b = get_model("bert").make_config()
    assert (b.num_layers, b.num_heads, b.embedding_dim, b.dropout, b.mask_prob) == (4, 4, 256, 0.2, 0.2)
    w = get_model("lstm_w2v").make_config()
    assert (w.embedding_dim, w.use_track_features, w.w2v_window, w.use_pretrained) == (100, True, 10, True)
    assert get_model("bigru").make_config().use_pretrained  # "same as 2.1.2": word2vec too
    for spec in MODELS.values():
        assert spec.make_config().use_context is False  # the paper's setting


def test_unknown_config_fields_are_rejected_naming_them():
    with pytest.raises(ValueError, match="unknown config field\\(s\\) hiden_size"):
        get_model("lstm").make_config({"hiden_size": 3})


def test_bad_config_values_are_rejected_with_a_sentence():
    with pytest.raises(ValueError, match="loss = 'hinge'"):
        get_model("lstm").make_config({"loss": "hinge"})
    with pytest.raises(ValueError, match="not divisible by num_heads 3"):
        get_model("transformer").make_config({"embedding_dim": 16, "num_heads": 3})


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def test_skipped_input_tracks_become_the_skip_token_only_with_skip_padding():
    batch = make_batch(4, "challenge")
    padded = encoder_tokens(batch, "skip", skip_padding=True)
    skipped = batch["in_skip_2"].bool() & batch["in_mask"]
    assert (padded[skipped] == SKIP_ID).all()
    assert torch.equal(padded[~skipped & batch["in_mask"]], batch["in_tracks"][~skipped & batch["in_mask"]])
    assert (padded[~batch["in_mask"]] == PAD_ID).all()
    assert torch.equal(encoder_tokens(batch, "skip", skip_padding=False), batch["in_tracks"])
    assert torch.equal(encoder_tokens(batch, "seq", skip_padding=True), batch["in_tracks"])


def test_decoder_inputs_are_the_targets_shifted_right_after_a_start_token():
    targets = torch.tensor([[7, 8, 9]])
    assert shifted_targets(targets).tolist() == [[MASK_ID, 7, 8]]


def test_track_features_without_feature_data_fail_clearly():
    info = DataInfo(VOCAB_SIZE)
    with pytest.raises(ValueError, match="need DataInfo.track_features"):
        tiny_model("lstm", "skip", info, use_track_features=True)


@pytest.mark.parametrize("name", ["lstm_w2v", "bert"])
def test_missing_pretrained_weights_fail_clearly(name):
    with pytest.raises(ValueError, match="run the model's ModelSpec.pretrain"):
        tiny_model(name, "skip", use_pretrained=True)


# ---------------------------------------------------------------------------
# Both tasks, both protocols
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["paper", "challenge"])
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_backward_and_predict_on_a_tiny_batch(name, task, protocol):
    model = tiny_model(name, task, use_context=(protocol == "challenge"), use_track_features=True)
    assert model.task == task
    batch = make_batch(5, protocol)
    logits, loss = model(batch)
    assert logits.shape == (5, 10, 2 if task == "skip" else VOCAB_SIZE)
    assert torch.isfinite(loss) and loss.ndim == 0
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    assert sum(g.abs().sum() for g in grads if g is not None) > 0
    predictions = model.predict(batch)
    assert predictions.shape == (5, 10) and predictions.dtype == torch.long
    if task == "skip":
        assert set(predictions.unique().tolist()) <= {0, 1}
    else:
        assert (predictions >= FIRST_TRACK_ID).all() and (predictions < VOCAB_SIZE).all()


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", ALL_MODELS)
def test_checkpoint_round_trip_gives_identical_predictions(name, task, tmp_path):
    model = tiny_model(name, task, use_context=True)
    batch = make_batch(6, "challenge", seed=3)
    # a few steps so that the weights differ from any fresh initialisation
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        model(batch)[1].backward()
        optimizer.step()
    torch.save({"config": config_to_dict(model.config), "task": model.task, "state": model.state_dict()}, tmp_path / "ckpt.pt")

    saved = torch.load(tmp_path / "ckpt.pt")
    spec = get_model(name)
    torch.manual_seed(123)  # a different initialisation, overwritten by the checkpoint
    restored = spec.build(spec.make_config(saved["config"]), saved["task"], make_info())
    restored.load_state_dict(saved["state"])
    model.eval()
    restored.eval()
    assert torch.equal(model.predict(batch), restored.predict(batch))
    assert torch.equal(model(batch)[0], restored(batch)[0])


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", ALL_MODELS)
def test_same_seed_gives_the_same_model_and_training_loss(name, task):
    batch = make_batch(4, "challenge")
    losses = []
    for _ in range(2):
        model = tiny_model(name, task, seed=5)
        torch.manual_seed(9)
        losses.append(model(batch)[1])  # training mode: dropout (and drop-net) draws included
    assert torch.equal(losses[0], losses[1])


@pytest.mark.parametrize("name", DECODER_MODELS)
def test_seq_decoder_cannot_peek_at_future_targets(name):
    model = tiny_model(name, "seq").eval()
    batch = make_batch(4, "paper")
    logits, _ = model(batch)
    for k in (0, 4, 8):
        changed = batch["out_tracks"].clone()
        changed[:, k:] = FIRST_TRACK_ID + (changed[:, k:] - FIRST_TRACK_ID + 7) % (VOCAB_SIZE - FIRST_TRACK_ID)
        changed_logits, _ = model({**batch, "out_tracks": changed})
        # step t reads target t-1: steps 0..k see nothing that changed, step k+1 does
        assert torch.allclose(logits[:, : k + 1], changed_logits[:, : k + 1], atol=1e-6)
        assert not torch.allclose(logits[:, k + 1 :], changed_logits[:, k + 1 :])


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", ALL_MODELS)
def test_padding_positions_do_not_change_the_loss(name, task):
    model = tiny_model(name, task, use_context=True, use_track_features=True).eval()
    batch = make_batch(6, "challenge", seed=2)
    assert (~batch["in_mask"]).any() and (~batch["out_mask"]).any()
    _, loss = model(batch)
    scrambled = dict(batch)
    generator = torch.Generator().manual_seed(0)
    for key, value in batch.items():
        if key.startswith(("in_", "out_")) and not key.endswith("_mask"):
            mask = batch["in_mask"] if key.startswith("in_") else batch["out_mask"]
            high = 2 if "skip" in key or key.endswith(("premium", "is_shuffle")) else 6
            noise = torch.randint(FIRST_TRACK_ID, VOCAB_SIZE, value.shape, generator=generator) if key.endswith(
                "tracks"
            ) else torch.randint(0, high, value.shape, generator=generator)
            scrambled[key] = torch.where(mask, value, noise)
    _, scrambled_loss = model(scrambled)
    assert torch.allclose(loss, scrambled_loss, atol=1e-6)
    assert torch.equal(model.predict(batch)[batch["out_mask"]], model.predict(scrambled)[batch["out_mask"]])


@pytest.mark.parametrize("name", ALL_MODELS)
def test_reserved_ids_are_never_predicted_even_when_the_model_prefers_them(name):
    model = tiny_model(name, "seq").eval()
    with torch.no_grad():
        model.head.proj.bias[:FIRST_TRACK_ID] = 1e4  # the output layer now loves pad/mask/skip/unk
    batch = make_batch(5, "challenge")
    for beam in (1, 3):
        assert (model.predict(batch, beam_size=beam) >= FIRST_TRACK_ID).all()


def test_unknown_targets_do_not_count_in_the_seq_loss():
    model = tiny_model("transformer", "seq").eval()
    batch = make_batch(4, "paper")
    with_unk = {**batch, "out_tracks": batch["out_tracks"].clone()}
    with_unk["out_tracks"][:, 9] = 3  # <unk>: only the challenge protocol has them; unpredictable
    logits, loss = model(batch)
    _, loss_unk = model(with_unk)
    assert torch.isfinite(loss_unk)
    # the loss is the mean over the other 9 positions, which an <unk> at position 9 cannot change
    log_probs = logits.log_softmax(-1).gather(-1, batch["out_tracks"][..., None]).squeeze(-1)  # (B, 10)
    assert torch.allclose(loss_unk, -log_probs[:, :9].mean(), atol=1e-5)
    assert not torch.allclose(loss, loss_unk)


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------


def test_negatives_follow_the_log_uniform_distribution_they_are_corrected_for():
    torch.manual_seed(0)
    ranks = log_uniform_sample(200_000, 50, "cpu")
    frequencies = torch.bincount(ranks, minlength=50).float() / len(ranks)
    expected = log_uniform_log_q(torch.arange(50), 50).exp()
    assert torch.allclose(expected.sum(), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(frequencies, expected, atol=0.004)


def test_sampled_softmax_trains_without_full_logits_and_evaluates_on_the_full_vocabulary():
    model = tiny_model("transformer", "seq", loss="sampled_softmax", num_negatives=8)
    batch = make_batch(4, "paper")
    logits, loss = model(batch)
    assert logits is None and torch.isfinite(loss)
    loss.backward()
    model.eval()
    logits, full_loss = model(batch)
    assert logits.shape == (4, 10, VOCAB_SIZE) and torch.isfinite(full_loss)


# ---------------------------------------------------------------------------
# Learning: a tiny model memorises a tiny batch
# ---------------------------------------------------------------------------


def _overfit(model, batch, steps: int, lr: float = 1e-2) -> tuple[float, float]:
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    first = None
    for _ in range(steps):
        optimizer.zero_grad()
        _, loss = model(batch)
        loss.backward()
        optimizer.step()
        first = float(loss.detach()) if first is None else first
    model.eval()
    return first, float(model(batch)[1].detach())


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", ALL_MODELS)
def test_each_family_memorises_a_tiny_batch(name, task):
    model = tiny_model(name, task, dropout=0.0)
    batch = make_batch(8, "challenge", seed=4)
    first, last = _overfit(model, batch, steps=60)
    assert last < 0.3 * first, f"{name}/{task}: loss {first:.3f} -> {last:.3f}"
    predictions = model.predict(batch)
    targets = batch["out_skip_2"] if task == "skip" else batch["out_tracks"]
    accuracy = (predictions == targets)[batch["out_mask"]].float().mean()
    assert accuracy > 0.9, f"{name}/{task}: memorised only {accuracy:.2f} of the tiny batch"


def test_sampled_softmax_model_memorises_a_tiny_batch():
    model = tiny_model("transformer", "seq", dropout=0.0, loss="sampled_softmax", num_negatives=12)
    batch = make_batch(8, "challenge", seed=4)
    model.eval()
    before = float(model(batch)[1].detach())
    _overfit(model, batch, steps=60)
    after = float(model(batch)[1].detach())  # the full-softmax loss
    assert after < 0.3 * before


# ---------------------------------------------------------------------------
# BERT-fused drop-net
# ---------------------------------------------------------------------------


def test_drop_net_uses_one_attention_or_the_average_in_training_and_the_average_in_evaluation():
    from models.bert_fused import drop_net

    a, b = torch.zeros(3), torch.ones(3)
    assert torch.equal(drop_net(a, b, 1.0, training=False), torch.full((3,), 0.5))
    assert torch.equal(drop_net(a, b, 0.0, training=True), torch.full((3,), 0.5))
    torch.manual_seed(0)
    draws = [drop_net(a, b, 0.5, training=True)[0].item() for _ in range(4000)]
    shares = {v: draws.count(v) / len(draws) for v in (0.0, 0.5, 1.0)}
    assert sum(shares.values()) == 1.0
    # p/2 self-attention only, p/2 BERT-attention only, 1-p the average
    assert abs(shares[0.0] - 0.25) < 0.03 and abs(shares[1.0] - 0.25) < 0.03 and abs(shares[0.5] - 0.5) < 0.03
