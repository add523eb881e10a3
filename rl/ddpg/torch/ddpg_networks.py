"""The DDPG networks as plain torch modules (no RLlib import).

The RLModule (default_ddpg_torch_rl_module.py) holds them for training; a
trained actor (`Actor`: the state encoder and the policy head) also runs on its
own, e.g. to predict from a checkpoint in a process that never starts Ray.

    state_encoder:  obs -> Linear -> ReLU -> s                       (hidden)
    policy head:    s -> Linear -> ReLU -> Linear -> tanh -> mu(s)   (in [-1, 1]^A)
    CrossCritic:    [s, a, (P s) * a] -> Linear -> ReLU -> Linear -> Q(s, a)

The critic's cross term (P s) * a is the wide & deep idea of the paper's state
applied to state and action: the critic can represent a . w(s), the score of an
action against a state-dependent direction, with one linear layer, where a
plain MLP on [s, a] has to approximate that product with its ReLUs. With an
action of many dimensions (an ideal track vector) this is what makes the
critic's gradient with respect to the action usable within a few hundred
updates (BENCHMARKS.md).
"""

from __future__ import annotations

import torch
from torch import nn


def state_encoder(observation_size: int, hidden_size: int) -> nn.Module:
    return nn.Sequential(nn.Linear(observation_size, hidden_size), nn.ReLU())


def policy_head(hidden_size: int, action_size: int) -> nn.Module:
    return nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, action_size), nn.Tanh())


class CrossCritic(nn.Module):
    """Q(s, a) from the state embedding s and the action a, with the cross term (P s) * a."""

    def __init__(self, hidden_size: int, action_size: int):
        super().__init__()
        self.cross = nn.Linear(hidden_size, action_size)  # P
        self.mlp = nn.Sequential(nn.Linear(hidden_size + 2 * action_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, 1))

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        action = action.reshape(len(action), -1)
        return self.mlp(torch.cat([state, action, self.cross(state) * action], dim=-1)).squeeze(-1)  # (B,)


class Actor(nn.Module):
    """The deterministic policy mu(obs) = policy_head(state_encoder(obs)), with the RLModule's attribute names."""

    def __init__(self, observation_size: int, action_size: int, hidden_size: int):
        super().__init__()
        self.state_encoder = state_encoder(observation_size, hidden_size)
        self.pi = policy_head(hidden_size, action_size)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.pi(self.state_encoder(obs))
