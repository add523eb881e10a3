"""DDPG as a model of the search system: its config, search space and the paper's settings.

Plain data only (no Ray import here), in the registry format of
`models/registry.py`, so the search and the leaderboard treat DDPG like the
supervised models. `rl.trainer.RLTrainer` turns a `DDPGModelConfig` into an
RLlib `DDPGConfig` on the session-replay environment.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


NAME = "ddpg"


@dataclass
class DDPGModelConfig:
    """Every DDPG knob; field names are the names in the search space and in Tune results."""

    # Fixed track embedding table: word2vec of this size, concatenated with the 30 track features.
    embedding_size: int = 16  # paper: track embedding size 16
    hidden_size: int = 8  # paper: hidden size 8 for actor and critic (shared state embedding width)
    # DDPG
    tau: float = 0.01  # soft target update rate
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    gamma: float = 0.9
    batch_size: int = 512  # paper
    buffer_size: int = 100_000  # replay buffer capacity, in env steps
    learning_starts: int = 1_000  # env steps sampled before the first update
    env_steps_per_update: int = 10  # env steps sampled between two learner updates
    # Exploration (paper Experiment 6): "none", "mask" with noise_mask_decay = 0 (noise)
    # or > 0 (noise with decay); "gaussian" as the classic alternative.
    noise_type: str = "mask"
    noise_mask_initial: float = 0.3  # fraction of action dimensions dropped at step 0
    noise_mask_decay: float = 1e-4  # per env step: fraction(t) = initial * (1 - decay) ** t
    gaussian_sigma: float = 0.1
    # Environment
    negative_ratio: int = 99  # negatives per positive candidate (paper 1:99)
    negative_sampling: str = "popularity"  # or "uniform"
    # Schedule: one trainer epoch = iterations_per_epoch RLlib iterations of steps_per_iteration env steps.
    steps_per_iteration: int = 1_000
    iterations_per_epoch: int = 5
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


SEARCH_SPACE: dict[str, tuple] = {
    "embedding_size": ("choice", [8, 16, 32]),
    "hidden_size": ("choice", [8, 32, 128]),
    "tau": ("loguniform", 1e-3, 5e-2),
    "actor_lr": ("loguniform", 1e-5, 1e-3),
    "critic_lr": ("loguniform", 1e-4, 1e-2),
    "noise_mask_initial": ("uniform", 0.0, 0.6),
    "noise_mask_decay": ("loguniform", 1e-5, 1e-3),
    "negative_ratio": ("choice", [19, 49, 99]),
    "buffer_size": ("choice", [10_000, 100_000]),
}

# The paper's setting (section 2.3): embedding 16, hidden 8, batch 512, 1:99
# negatives, noisy mask with decay (its best skip row, Table 1 "with noise").
PAPER_CONFIGS: dict[str, dict] = {
    "skip": {"embedding_size": 16, "hidden_size": 8, "batch_size": 512, "negative_ratio": 99, "noise_type": "mask"},
    "seq": {"embedding_size": 16, "hidden_size": 8, "batch_size": 512, "negative_ratio": 99, "noise_type": "mask"},
}

# The search's first point: the defaults (see DDPGModelConfig).
START_CONFIGS: dict[str, dict] = {"skip": {}, "seq": {}}

# --budget small: short epochs (2 RLlib iterations of 500 env steps), so a DDPG trial takes
# about as long as a small supervised one on a laptop.
SMALL_SETTINGS: dict = {"steps_per_iteration": 500, "iterations_per_epoch": 2}

# The paper's three exploration settings (Experiment 6), as config overrides.
NOISE_SETTINGS: dict[str, dict] = {
    "no noise": {"noise_type": "none"},
    "noise": {"noise_type": "mask", "noise_mask_decay": 0.0},
    "noise with decay": {"noise_type": "mask"},
}
