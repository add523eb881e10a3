"""Exploration for DDPG: the paper's noisy mask (Experiment 6) and Gaussian action noise.

Noisy mask: while exploring, the actor's action (a vector in the
track-embedding space) has a random fraction of its dimensions set to zero, so
the dot product that picks a track ignores them: a "semi-educated guess" rather
than the random action of epsilon-greedy. The fraction after `t` environment
steps is

    noise_mask_fraction(t) = noise_mask_initial * (1 - noise_mask_decay) ** t

so ``noise_mask_decay = 0`` keeps it constant (the paper's "noise") and a
positive decay shrinks it toward 0 (the paper's "noise with decay");
``noise_type = "none"`` (or ``noise_mask_initial = 0``) is the plain
deterministic actor. Inference never adds noise.
"""

from __future__ import annotations

import torch

NOISE_TYPES = ("mask", "gaussian", "none")


def noise_mask_fraction(t: int, noise_mask_initial: float, noise_mask_decay: float) -> float:
    """Fraction of action dimensions dropped after `t` sampled environment steps."""
    return float(noise_mask_initial * (1.0 - noise_mask_decay) ** max(int(t), 0))


def apply_noise_mask(action: torch.Tensor, fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """`action` (B, D) with round(fraction * D) random dimensions per row set to zero."""
    batch, dim = action.shape
    dropped = int(round(fraction * dim))
    if dropped == 0:
        return action
    order = torch.rand(batch, dim, generator=generator, device=action.device).argsort(dim=1)  # random permutation per row
    keep = order >= dropped  # (B, D): exactly `dropped` False per row
    return action * keep.to(action.dtype)


def explore(action: torch.Tensor, t: int, model_config: dict, generator: torch.Generator | None = None) -> torch.Tensor:
    """The exploratory action for the configured noise type; actions stay inside [-1, 1]."""
    noise_type = model_config["noise_type"]
    if noise_type == "mask":
        fraction = noise_mask_fraction(t, model_config["noise_mask_initial"], model_config["noise_mask_decay"])
        return apply_noise_mask(action, fraction, generator)
    if noise_type == "gaussian":
        noise = torch.randn(action.shape, generator=generator, device=action.device) * model_config["gaussian_sigma"]
        return (action + noise).clamp(-1.0, 1.0)
    return action
