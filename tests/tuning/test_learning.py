"""Learning: short trainings beat the simple baselines on the tiny synthetic set (val MAA).

Skip task: the model must beat the best of all_skip / no_skip / session_majority /
copy_last_skip. Seq task: it must beat most_popular. Small configurations and a
large learning rate keep this inside CI time on 2 cores; the benchmark
`benchmarks/model_quality.py` reports every family with longer trainings.
"""

import pytest

from models.baselines import BASELINES
from tuning.evaluate import evaluate_baseline
from tuning.families import make_trainer

PROTOCOL = "challenge"  # every session (the paper protocol keeps only the 20-track ones)
EPOCHS = 2
CONFIGS = {
    ("skip", "lstm"): {"lr": 3e-3, "hidden_size": 64, "embedding_dim": 64, "batch_size": 64, "use_context": True},
    ("skip", "transformer"): {"lr": 1e-3, "embedding_dim": 64, "ffn_dim": 128, "num_layers": 1, "batch_size": 64,
                              "use_context": True},
    ("seq", "lstm"): {"lr": 3e-3, "hidden_size": 64, "embedding_dim": 64, "batch_size": 64},
    ("seq", "transformer"): {"lr": 2e-3, "embedding_dim": 64, "ffn_dim": 128, "num_layers": 1, "batch_size": 64},
}


def train_and_score(task, model, data_dir):
    trainer = make_trainer(task, model, CONFIGS[task, model], data_dir, protocol=PROTOCOL, device="cpu",
                           input_path="memory", seed=0)
    for _ in range(EPOCHS):
        trainer.train_epoch()
    return trainer.evaluate("val")["maa"]


@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_skip_model_beats_the_best_simple_baseline(synthetic_prepared, model):
    baselines = {name: evaluate_baseline("skip", name, synthetic_prepared, "val", PROTOCOL)["maa"] for name in BASELINES["skip"]}
    best = max(baselines.values())
    assert train_and_score("skip", model, synthetic_prepared) > best, baselines


@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_seq_model_beats_most_popular(synthetic_prepared, model):
    most_popular = evaluate_baseline("seq", "most_popular", synthetic_prepared, "val", PROTOCOL)["maa"]
    assert train_and_score("seq", model, synthetic_prepared) > most_popular + 0.02
