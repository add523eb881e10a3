"""PyTorch DDPG Learner: the critic's TD loss and the actor's -Q(s, mu(s)).

    y            = r + gamma * (1 - terminated) * Q'(s', mu'(s'))        (target nets, no grad)
    critic loss  = mean((Q(s, a) - y)^2)                                 (uniform replay: no weights)
    actor loss   = -mean(Q(s, mu(s)))                                    (critic frozen)

Both losses are summed into one backward pass: the module arranges that no
parameter receives gradient from both (see default_ddpg_rl_module.py), so the
critic optimizer (shared state encoder + critic, `critic_lr`) and the actor
optimizer (policy head, `actor_lr`) each see only their own loss.
"""

from __future__ import annotations

from typing import Any, Dict

import torch

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override
from ray.rllib.utils.typing import ModuleID, TensorType

from rl.ddpg.ddpg_learner import POLICY_LOSS_KEY, QF_LOSS_KEY, QF_MEAN_KEY, TD_ERROR_MEAN_KEY, DDPGLearner
from rl.ddpg.default_ddpg_rl_module import QF_ACTOR, QF_PREDS, QF_TARGET_NEXT


class DDPGTorchLearner(DDPGLearner, TorchLearner):
    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id: ModuleID, config: AlgorithmConfig = None) -> None:
        module = self._module[module_id]
        groups = {
            "qf": (self.get_parameters(module.state_encoder) + self.get_parameters(module.qf), config.critic_lr),
            "policy": (self.get_parameters(module.pi), config.actor_lr),
        }
        for name, (params, lr) in groups.items():
            self.register_optimizer(
                module_id=module_id, optimizer_name=name, optimizer=torch.optim.Adam(params), params=params,
                lr_or_lr_schedule=lr,
            )

    @override(TorchLearner)
    def compute_loss_for_module(
        self, *, module_id: ModuleID, config: AlgorithmConfig, batch: Dict[str, Any], fwd_out: Dict[str, TensorType]
    ) -> TensorType:
        critic_loss, actor_loss, td_error = ddpg_losses(batch, fwd_out, config.gamma)
        self.metrics.log_dict(
            {
                QF_LOSS_KEY: critic_loss,
                POLICY_LOSS_KEY: actor_loss,
                QF_MEAN_KEY: torch.mean(fwd_out[QF_PREDS]),
                TD_ERROR_MEAN_KEY: torch.mean(td_error),
            },
            key=module_id,
            window=1,
        )
        return critic_loss + actor_loss


def ddpg_losses(
    batch: Dict[str, Any], fwd_out: Dict[str, TensorType], gamma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(critic loss, actor loss, |TD error| per sample) for one train batch; see the module docstring."""
    not_done = 1.0 - batch[Columns.TERMINATEDS].float()
    target = (batch[Columns.REWARDS] + not_done * gamma * fwd_out[QF_TARGET_NEXT]).detach()  # y
    q = fwd_out[QF_PREDS]
    critic_loss = torch.mean((q - target) ** 2)
    actor_loss = -torch.mean(fwd_out[QF_ACTOR])
    return critic_loss, actor_loss, torch.abs(q - target).detach()
