"""PyTorch implementation of the default DDPG RLModule (see default_ddpg_rl_module.py)."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np
import torch

from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import QNetAPI, TargetNetworkAPI
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.utils.annotations import override

from rl.ddpg.default_ddpg_rl_module import QF_ACTOR, QF_PREDS, QF_TARGET_NEXT, DefaultDDPGRLModule
from rl.ddpg.exploration import explore
from rl.ddpg.torch.ddpg_networks import CrossCritic, policy_head, state_encoder


class DefaultDDPGTorchRLModule(TorchRLModule, DefaultDDPGRLModule):
    framework: str = "torch"

    @override(TorchRLModule)
    def setup(self):
        obs_dim = int(np.prod(self.observation_space.shape))
        action_dim = int(np.prod(self.action_space.shape))
        hidden = int(self.model_config["hidden_size"])
        self.state_encoder = state_encoder(obs_dim, hidden)  # shared by actor and critic
        self.pi = policy_head(hidden, action_dim)
        if not self.inference_only:
            self.qf = CrossCritic(hidden, action_dim)

    @override(TargetNetworkAPI)
    def make_target_networks(self):
        self.target_state_encoder = make_target_network(self.state_encoder)
        self.target_pi = make_target_network(self.pi)
        self.target_qf = make_target_network(self.qf)

    def _actor(self, obs: torch.Tensor) -> torch.Tensor:
        return self.pi(self.state_encoder(obs))  # (B, A)

    @override(TorchRLModule)
    def _forward_inference(self, batch: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        with torch.no_grad():
            return {Columns.ACTIONS: self._actor(batch[Columns.OBS])}

    @override(TorchRLModule)
    def _forward_exploration(self, batch: Dict[str, Any], t: int = 0, **kwargs) -> Dict[str, Any]:
        with torch.no_grad():
            action = self._actor(batch[Columns.OBS])
            return {Columns.ACTIONS: explore(action, t, self.model_config)}

    @override(TorchRLModule)
    def _forward_train(self, batch: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        state = self.state_encoder(batch[Columns.OBS])  # (B, H)
        out = {QF_PREDS: self.qf(state, batch[Columns.ACTIONS])}  # critic on replayed actions
        # Actor objective Q(s, mu(s)): the shared state embedding is detached and the
        # critic's parameters are frozen for this pass, so the actor loss moves only pi
        # (requires_grad is toggled, not no_grad, so the gradient still flows through Q
        # into the action, as in RLlib's SAC/TQC).
        critic_params = list(self.qf.parameters())
        was = [p.requires_grad for p in critic_params]
        for p in critic_params:
            p.requires_grad_(False)
        detached = state.detach()
        out[QF_ACTOR] = self.qf(detached, self.pi(detached))
        for p, flag in zip(critic_params, was):
            p.requires_grad_(flag)
        if Columns.NEXT_OBS in batch:
            with torch.no_grad():
                out[QF_TARGET_NEXT] = self.forward_target({Columns.OBS: batch[Columns.NEXT_OBS]})[QF_TARGET_NEXT]
        return out

    @override(TargetNetworkAPI)
    def forward_target(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        """Q'(s, mu'(s)) from the target networks, (B,)."""
        state = self.target_state_encoder(batch[Columns.OBS])
        return {QF_TARGET_NEXT: self.target_qf(state, self.target_pi(state))}

    @override(QNetAPI)
    def compute_q_values(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        """Q(s, a) for the batch's observations and actions, (B,)."""
        return {QF_PREDS: self.qf(self.state_encoder(batch[Columns.OBS]), batch[Columns.ACTIONS])}
