"""Default DDPG RLModule: a deterministic actor, one critic, their target networks.

Architecture (the paper's Figure 3b: actor and critic share the state and the
action embedding):

    [obs] -> [state_encoder] -> s                      shared state embedding
    s -> [pi] -> mu(s) in [-1, 1]^D                    actor ("ideal track")
    [s, a, (P s) * a] -> [qf] -> Q(s, a)               critic, with a state-action cross term
    targets: target_state_encoder, target_pi, target_qf (soft-updated with tau)

How the sharing is done within RLlib's module structure: the actor and the
critic live in this one RLModule, so they can hold the same `state_encoder`.
It is trained by the critic's TD loss only (it belongs to the critic's
optimizer); the actor reads its output detached, so the actor loss moves the
policy head and never drags the shared embedding away from what the critic
needs. The action embedding is shared by construction: the actor's output is a
point in the track-embedding space of the environment's fixed table, and the
critic takes the action in that very space (no separate action encoder), so a
critic gradient on Q(s, a) is a gradient with respect to the same coordinates
the environment's dot product uses. The networks themselves are plain torch
modules (torch/ddpg_networks.py), so a trained actor also runs without RLlib.
"""

from __future__ import annotations

from typing import List, Tuple

from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, QNetAPI, TargetNetworkAPI
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.utils.annotations import override
from ray.rllib.utils.typing import NetworkType

# Keys of the module's train-forward output, read by the Learner.
QF_PREDS = "qf_preds"  # Q(s, a) for the replayed actions
QF_TARGET_NEXT = "q_target_next"  # Q'(s', mu'(s')) from the target networks
QF_ACTOR = "qf_actor"  # Q(s, mu(s)) with the critic frozen: the actor's objective


class DefaultDDPGRLModule(RLModule, InferenceOnlyAPI, TargetNetworkAPI, QNetAPI):
    """Framework-independent part of the DDPG module: which nets exist and how they pair."""

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> List[str]:
        # EnvRunners need only the state encoder and the actor.
        return ["qf", "target_state_encoder", "target_pi", "target_qf"]

    @override(TargetNetworkAPI)
    def get_target_network_pairs(self) -> List[Tuple[NetworkType, NetworkType]]:
        return [
            (self.state_encoder, self.target_state_encoder),
            (self.pi, self.target_pi),
            (self.qf, self.target_qf),
        ]

    @override(RLModule)
    def get_initial_state(self) -> dict:
        return {}  # not recurrent
