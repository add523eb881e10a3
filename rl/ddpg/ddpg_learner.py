"""DDPG Learner base: target networks and their soft updates come from DQNLearner.

`DQNLearner.build` creates the target networks through the module's
`TargetNetworkAPI` and adds NEXT_OBS to train batches;
`DQNLearner.after_gradient_based_update` applies, after every update (with
`target_network_update_freq = 0`), the soft update

    target <- tau * main + (1 - tau) * target

to every (main, target) pair the module returns.
"""

from __future__ import annotations

from ray.rllib.algorithms.dqn.dqn_learner import DQNLearner

# Metric keys reported by the DDPG Learner.
QF_LOSS_KEY = "qf_loss"
POLICY_LOSS_KEY = "policy_loss"
QF_MEAN_KEY = "qf_mean"
TD_ERROR_MEAN_KEY = "td_error_mean"


class DDPGLearner(DQNLearner):
    """Framework-independent DDPG Learner; see torch/ddpg_torch_learner.py for the losses."""
