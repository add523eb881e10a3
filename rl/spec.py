"""DDPG as a model of the search system: its config, search space and the paper's settings.

Plain data only (no Ray import here), in the registry format of
`models/registry.py`, so the search and the leaderboard treat DDPG like the
supervised models. `rl.trainer.RLTrainer` turns a `DDPGModelConfig` into an
RLlib `DDPGConfig` on the session-replay environment, and `DDPGConfig` takes
its defaults from here: this is the one place they are written.

Two formulations (rl/env.py): ``dense`` (the default, which the search uses:
a proper-scoring-rule reward that the critic can learn from within the small
budget) and ``paper`` (the paper's sparse reward over 1:99 sampled negatives,
run as the paper trial; it lands on the all-skip answer, see BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


NAME = "ddpg"


@dataclass
class DDPGModelConfig:
    """Every DDPG knob; field names are the names in the search space and in Tune results."""

    # What the agent sees, does and is rewarded for (rl/env.py): "dense" or "paper".
    formulation: str = "dense"
    # Fixed track embedding table: word2vec of this size, concatenated with the 30 track features.
    embedding_size: int = 16  # paper: track embedding size 16
    hidden_size: int = 64  # width of the shared state embedding and the actor's and critic's layers (paper: 8)
    # DDPG
    tau: float = 0.01  # soft target update rate (no effect with gamma 0: the targets are never read)
    # 1e-4: on the synthetic set (3 epochs, seeds 0-2) seq val MAA 0.052-0.055 against 0.026-0.047 at 3e-4,
    # whose actor drifts between epochs; skip is the same within noise (0.576-0.583 against 0.566-0.585).
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    # Session replay: the next state does not depend on the action (the history follows the log), so
    # gamma 0 loses nothing and spares the critic bootstrapping noise (the paper setting uses 0.9).
    gamma: float = 0.0
    batch_size: int = 512  # paper
    buffer_size: int = 50_000  # replay buffer capacity, in transitions (env steps)
    learning_starts: int = 2_048  # env steps sampled before the first update
    num_envs: int = 256  # sessions the EnvRunner replays at once (one vectorised environment)
    # Replayed / sampled transitions (RLlib's training_intensity): with 256 envs and batch 512, 2.0 is one
    # update per vector step (256 new transitions), 4.0 two.
    training_intensity: float = 4.0
    # Exploration (paper Experiment 6): "none", "mask" with noise_mask_decay = 0 (noise)
    # or > 0 (noise with decay); "gaussian": N(0, gaussian_sigma) added to the action.
    noise_type: str = "gaussian"
    noise_mask_initial: float = 0.3  # fraction of action dimensions dropped at step 0
    noise_mask_decay: float = 1e-4  # per env step: fraction(t) = initial * (1 - decay) ** t
    gaussian_sigma: float = 0.5
    # Environment (paper formulation): the candidates the choice is made among
    negative_ratio: int = 99  # negatives per positive candidate (paper 1:99)
    negative_sampling: str = "popularity"  # or "uniform"
    # Schedule: one trainer epoch replays this many training sessions; 0: as many as the train split holds
    # (sessions are drawn without replacement, so an epoch is one pass over the split).
    sessions_per_epoch: int = 0
    # Evaluation
    eval_sessions: int = 0  # 0 = the whole split; otherwise the first N sessions
    # Run option (not searched): one progress line per RLlib iteration on stderr
    show_progress: bool = False

    @classmethod
    def from_dict(cls, config: dict) -> "DDPGModelConfig":
        """Build from a (possibly partial) dict, rejecting unknown keys with the list of known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(
                f"unknown DDPG config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
            )
        return cls(**config)

    def to_dict(self) -> dict:
        return asdict(self)


# The search draws the dense formulation's knobs (the formulation itself is not searched). `--budget small`
# keeps the smallest third of each size choice (tuning/spaces.py): 16 and 64, the defaults. Smaller DDPG
# networks are no faster to train here (the environment and RLlib's loop dominate) and learn seq worse:
# embedding 8 / hidden 32 scored seq val MAA ~0.02 after 2 epochs, below most-popular (0.034).
SEARCH_SPACE: dict[str, tuple] = {
    "embedding_size": ("choice", [16, 32, 64]),
    "hidden_size": ("choice", [64, 128, 256]),
    "actor_lr": ("loguniform", 3e-5, 1e-3),
    "critic_lr": ("loguniform", 3e-4, 3e-3),
    "gaussian_sigma": ("uniform", 0.2, 0.8),
    "training_intensity": ("choice", [2.0, 4.0]),
}

# The paper's setting (section 2.3): its formulation, embedding 16, hidden 8, batch 512, 1:99
# negatives, noisy mask with decay (its best skip row, Table 1 "with noise"), discount 0.9.
PAPER_CONFIGS: dict[str, dict] = {
    task: {"formulation": "paper", "embedding_size": 16, "hidden_size": 8, "batch_size": 512, "negative_ratio": 99,
           "noise_type": "mask", "noise_mask_initial": 0.3, "noise_mask_decay": 1e-4, "gamma": 0.9}
    for task in ("skip", "seq")
}

# The search's first point: the defaults (see DDPGModelConfig).
START_CONFIGS: dict[str, dict] = {"skip": {}, "seq": {}}

# --budget small: no pinned field; an epoch is one pass over the train split, as for the supervised models.
SMALL_SETTINGS: dict = {}

# The paper's three exploration settings (Experiment 6), as config overrides of its formulation.
NOISE_SETTINGS: dict[str, dict] = {
    "no noise": {"noise_type": "none"},
    "noise": {"noise_type": "mask", "noise_mask_decay": 0.0},
    "noise with decay": {"noise_type": "mask", "noise_mask_decay": 1e-4},
}
