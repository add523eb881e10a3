"""Pre-training steps: word2vec track vectors and BERT Cloze, both cached on disk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.models.model_batches import TINY_CONFIGS, make_batch, make_info, playlist_sessions, tiny_model, write_prepared

from data_pipeline.schema import FIRST_TRACK_ID, MASK_ID, PAD_ID
from models.bert import BertLM, cloze_mask, train_cloze
from models.registry import get_model
from models.word2vec import train_word2vec

GROUPS, PER_GROUP = 4, 10
VOCAB = FIRST_TRACK_ID + GROUPS * PER_GROUP


@pytest.fixture(scope="module")
def playlists(tmp_path_factory):
    """A prepared dataset whose 400 training sessions each play one of 4 disjoint 10-track playlists."""
    tracks, lengths = playlist_sessions(400, GROUPS, PER_GROUP, seed=0)
    return write_prepared(tmp_path_factory.mktemp("playlists"), tracks, lengths, VOCAB)


# ---------------------------------------------------------------------------
# word2vec
# ---------------------------------------------------------------------------


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_word2vec_puts_tracks_that_share_sessions_closer_than_other_tracks(playlists):
    vectors = train_word2vec(playlists, dim=16, window=10, epochs=5, seed=0)
    assert vectors.shape == (VOCAB, 16) and vectors.dtype == np.float32
    assert not vectors[PAD_ID].any()
    same, other = [], []
    for i in range(FIRST_TRACK_ID, VOCAB):
        for j in range(i + 1, VOCAB):
            group_i, group_j = (i - FIRST_TRACK_ID) // PER_GROUP, (j - FIRST_TRACK_ID) // PER_GROUP
            (same if group_i == group_j else other).append(_cosine(vectors[i], vectors[j]))
    assert np.mean(same) > np.mean(other) + 0.3, (np.mean(same), np.mean(other))


def test_word2vec_is_cached_by_dataset_and_parameters(playlists, tmp_path):
    first = train_word2vec(playlists, dim=8, window=10, epochs=2, seed=0, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("word2vec-*.npy")
    np.testing.assert_array_equal(np.load(cached), first)
    # the second call reads the file: a marked copy there comes back
    np.save(cached, first + 1.0)
    np.testing.assert_array_equal(train_word2vec(playlists, dim=8, window=10, epochs=2, seed=0, cache_dir=tmp_path), first + 1.0)
    # other parameters are another entry
    train_word2vec(playlists, dim=8, window=5, epochs=2, seed=0, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("word2vec-*.npy"))) == 2


def test_word2vec_is_reproducible_with_one_worker(playlists):
    a = train_word2vec(playlists, dim=8, epochs=2, seed=3)
    b = train_word2vec(playlists, dim=8, epochs=2, seed=3)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["lstm_w2v", "bigru"])
def test_word2vec_families_start_from_the_pretrained_vectors(name, playlists, tmp_path):
    spec = get_model(name)
    config = spec.make_config({**TINY_CONFIGS[name], "use_pretrained": True, "w2v_epochs": 1})
    pretrained = spec.pretrain(config, playlists, tmp_path)
    assert pretrained["word2vec"].shape == (VOCAB, config.embedding_dim)
    model = tiny_model(name, "skip", make_info(VOCAB, pretrained=pretrained), use_pretrained=True, w2v_epochs=1)
    np.testing.assert_allclose(model.inputs.tracks.weight[FIRST_TRACK_ID:].detach().numpy(), pretrained["word2vec"][FIRST_TRACK_ID:])


# ---------------------------------------------------------------------------
# BERT Cloze
# ---------------------------------------------------------------------------


def test_cloze_masking_chooses_20_percent_then_80_10_10():
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(FIRST_TRACK_ID, 1000, (4000, 20), generator=generator)
    valid = torch.arange(20)[None, :] < torch.randint(10, 21, (4000, 1), generator=generator)
    tokens = tokens.masked_fill(~valid, PAD_ID)
    inputs, chosen = cloze_mask(tokens, valid, 0.2, 1000, generator)
    assert not chosen[~valid].any()  # padding is never a Cloze target
    assert torch.equal(inputs[~chosen], tokens[~chosen])  # unchosen tracks are untouched
    n = chosen.sum().item()
    assert abs(n / valid.sum().item() - 0.2) < 0.01
    masked = (inputs[chosen] == MASK_ID).float().mean().item()
    kept = (inputs[chosen] == tokens[chosen]).float().mean().item()
    replaced = 1.0 - masked - kept
    assert abs(masked - 0.8) < 0.015
    assert abs(kept - 0.1) < 0.01  # (a random replacement equal to the original is 1 in 996)
    assert abs(replaced - 0.1) < 0.01
    assert (inputs[chosen] != PAD_ID).all() and (inputs[chosen] >= MASK_ID).all()


def test_cloze_pretraining_loss_decreases(playlists):
    from models.bert import BertConfig
    from models.data import train_session_tracks

    tracks, lengths = train_session_tracks(playlists)
    torch.manual_seed(0)
    model = BertLM(BertConfig(embedding_dim=32, num_layers=1, num_heads=2, ffn_dim=64), VOCAB, dropout=0.0)
    history = train_cloze(model, tracks, lengths, epochs=3, lr=1e-2, batch_size=64, mask_prob=0.2, seed=0)
    assert len(history) == 3
    # from chance (log 40 = 3.7) towards knowing the playlist (log 10 = 2.3) in three short epochs
    assert history[0] > 3.2 and history[-1] < 2.9, history
    assert history[0] > history[1] > history[2], history


@pytest.mark.parametrize("name", ["bert", "bert_fused"])
def test_bert_pretraining_is_cached_and_loaded_into_the_model(name, playlists, tmp_path):
    spec = get_model(name)
    config = spec.make_config({**TINY_CONFIGS[name], "use_pretrained": True, "pretrain_epochs": 1})
    first = spec.pretrain(config, playlists, tmp_path)
    (cached,) = tmp_path.glob("bert-*.pt")
    mtime = cached.stat().st_mtime_ns
    second = spec.pretrain(config, playlists, tmp_path)
    assert cached.stat().st_mtime_ns == mtime  # loaded, not trained again
    assert all(torch.equal(first["bert"][k], second["bert"][k]) for k in first["bert"])
    model = tiny_model(name, "seq", make_info(VOCAB, pretrained=first), use_pretrained=True, pretrain_epochs=1)
    encoder = model.lm.encoder if name == "bert" else model.bert
    assert torch.equal(encoder.tracks.weight, first["bert"]["encoder.tracks.weight"])
    logits, loss = model(make_batch(3, "paper", vocab_size=VOCAB))
    assert torch.isfinite(loss)


def test_bert_and_bert_fused_share_one_pretrained_bert_when_sizes_match(playlists, tmp_path):
    bert = get_model("bert").make_config({"embedding_dim": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "pretrain_epochs": 1})
    fused = get_model("bert_fused").make_config(
        {"bert_embedding_dim": 16, "bert_num_layers": 1, "bert_num_heads": 2, "bert_ffn_dim": 32, "pretrain_epochs": 1}
    )
    get_model("bert").pretrain(bert, playlists, tmp_path)
    get_model("bert_fused").pretrain(fused, playlists, tmp_path)
    assert len(list(tmp_path.glob("bert-*.pt"))) == 1


def test_fused_bert_stays_fixed_while_the_transformer_trains():
    model = tiny_model("bert_fused", "skip")
    before = {k: v.clone() for k, v in model.bert.state_dict().items()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    assert not model.bert.training  # no dropout inside the fixed BERT
    batch = make_batch(4, "paper")
    for _ in range(2):
        optimizer.zero_grad()
        model(batch)[1].backward()
        optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in model.bert.state_dict().items())


def test_data_info_from_a_prepared_dataset_carries_its_vocabulary_features_and_categories(playlists):
    from models.data import DataInfo

    info = DataInfo.from_dataset(playlists, {"word2vec": np.zeros((VOCAB, 4), np.float32)})
    assert info.vocab_size == VOCAB
    assert info.track_features.shape == (VOCAB, 30)
    assert info.categories["context_type"][0] == "<pad/unknown>"
    assert set(info.pretrained) == {"word2vec"}


def _compute_slowly(path, log):
    import time

    from models.cache import cached

    def compute():
        with open(log, "a") as handle:
            handle.write("computed\n")
        time.sleep(1.0)
        return np.arange(3)

    return cached(path, compute, save=lambda v, tmp: np.save(tmp, v), load=np.load).tolist()


def test_a_cached_step_asked_for_by_two_processes_at_once_is_computed_once(tmp_path):
    import multiprocessing

    path, log = tmp_path / "step.npy", tmp_path / "log.txt"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(_compute_slowly, [(path, log), (path, log)])
    assert results == [[0, 1, 2], [0, 1, 2]]
    assert log.read_text() == "computed\n"  # the second waited for the first and loaded its file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.txt", "step.npy", "step.npy.lock"]
