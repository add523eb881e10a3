"""DDPG on RLlib's new API stack (RLModule, Learner, EnvRunner), laid out like `ray.rllib.algorithms.tqc`.

`DDPG` and `DDPGConfig` are imported on first use, so that the plain torch
networks (`rl.ddpg.torch.ddpg_networks`) load without importing RLlib: a
trained actor predicts in a process that never starts Ray.
"""

__all__ = ["DDPG", "DDPGConfig"]


def __getattr__(name: str):
    if name in __all__:
        from rl.ddpg import ddpg

        return getattr(ddpg, name)
    raise AttributeError(f"module 'rl.ddpg' has no attribute {name!r}")
