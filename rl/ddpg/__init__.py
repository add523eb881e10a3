"""DDPG on RLlib's new API stack (RLModule, Learner, EnvRunner), laid out like `ray.rllib.algorithms.tqc`."""

from rl.ddpg.ddpg import DDPG, DDPGConfig

__all__ = ["DDPG", "DDPGConfig"]
