"""Greedy decoding and beam search for the seq task."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from tests.models.model_batches import DECODER_MODELS, make_batch, make_info, raw_sessions, tiny_model, to_torch

from data_pipeline.dataset import split_halves
from data_pipeline.schema import FIRST_TRACK_ID
from models.encoder_decoder import beam_search, greedy_decode, sequence_log_prob


@pytest.fixture(scope="module")
def trained():
    """name -> a tiny seq model nudged towards a batch, so that its distributions are far from uniform
    (trained once per module)."""
    models = {}

    def get(name: str):
        if name not in models:
            torch.set_num_threads(1)
            model = tiny_model(name, "seq", dropout=0.0)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
            batch = make_batch(8, "challenge", seed=3)
            for _ in range(15):
                optimizer.zero_grad()
                model(batch)[1].backward()
                optimizer.step()
            models[name] = model.eval()
        return models[name]

    return get


@pytest.mark.parametrize("name", DECODER_MODELS)
def test_greedy_score_is_the_teacher_forced_log_probability_of_its_output(name, trained):
    # step-by-step decoding (incremental for RNNs) and the training path agree
    batch = make_batch(5, "challenge", seed=1)
    model = trained(name)
    tracks, score = greedy_decode(model, batch)
    assert torch.allclose(score, sequence_log_prob(model, batch, tracks), atol=1e-4)
    assert torch.equal(model.predict(batch), tracks)


@pytest.mark.parametrize("name", DECODER_MODELS)
def test_beam_search_with_one_beam_is_greedy_decoding(name, trained):
    batch = make_batch(5, "challenge", seed=1)
    model = trained(name)
    assert torch.equal(model.predict(batch, beam_size=1), model.predict(batch))
    assert torch.equal(beam_search(model, batch, 1)[0], greedy_decode(model, batch)[0])


@pytest.mark.parametrize("name", DECODER_MODELS)
def test_wider_beams_never_find_a_less_likely_sequence_than_greedy(name, trained):
    batch = make_batch(8, "challenge", seed=2)
    model = trained(name)
    greedy, _ = greedy_decode(model, batch)
    greedy_log_prob = sequence_log_prob(model, batch, greedy)
    for k in (2, 4):
        tracks, score = beam_search(model, batch, k)
        rescored = sequence_log_prob(model, batch, tracks)
        assert torch.allclose(score, rescored, atol=1e-4)
        assert (rescored >= greedy_log_prob - 1e-4).all()
        assert (tracks[batch["out_mask"]] >= FIRST_TRACK_ID).all()
    assert (rescored > greedy_log_prob + 1e-3).any()  # and the beam does find better sequences


def test_a_beam_as_wide_as_the_search_space_finds_the_most_likely_sequence():
    # 3 tracks and 5 output positions: 243 sequences, all scored by brute force
    vocab_size = FIRST_TRACK_ID + 3
    raw = raw_sessions(3, "challenge", seed=4, vocab_size=vocab_size)
    raw["length"][:] = 10  # n_in = n_out = 5
    raw = {k: (np.where(np.arange(20)[None] < 10, v, 0) if v.ndim == 2 else v) for k, v in raw.items()}
    batch = to_torch(split_halves(raw, "challenge"))
    assert batch["n_out"].tolist() == [5, 5, 5]
    info = make_info(vocab_size)
    model = tiny_model("transformer", "seq", info, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(10):  # away from the near-uniform initial distributions
        optimizer.zero_grad()
        model(batch)[1].backward()
        optimizer.step()
    model.eval()

    candidates = torch.tensor(list(itertools.product(range(FIRST_TRACK_ID, vocab_size), repeat=5)))  # (243, 5)
    best = []
    for i in range(3):
        session = {k: v[i : i + 1].expand(len(candidates), *v.shape[1:]) for k, v in batch.items()}
        tracks = torch.full((len(candidates), 10), FIRST_TRACK_ID)
        tracks[:, :5] = candidates
        best.append(sequence_log_prob(model, session, tracks).max())
    _, score = beam_search(model, batch, beam_size=243)
    assert torch.allclose(score, torch.stack(best), atol=1e-4)
    _, greedy_score = greedy_decode(model, batch)
    assert (score >= greedy_score - 1e-5).all()


def test_bert_predicts_every_position_at_once_so_beams_change_nothing():
    batch = make_batch(5, "paper")
    model = tiny_model("bert", "seq").eval()
    assert torch.equal(model.predict(batch, beam_size=4), model.predict(batch))
    assert torch.equal(model.predict(batch), model(batch)[0].argmax(-1))
