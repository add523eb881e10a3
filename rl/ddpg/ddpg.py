"""DDPG (Deep Deterministic Policy Gradient) on RLlib's new API stack.

Paper: Lillicrap et al. 2015, "Continuous control with deep reinforcement
learning"; used for recommendation by Zhao et al. 2018 and, with a noisy-mask
exploration, by the MSSD paper this project re-implements (section 2.3).

RLlib 2.60 no longer ships DDPG; this package rebuilds it the way RLlib builds
TQC: `DDPGConfig` extends `SACConfig` (same off-policy machinery: episode
replay buffer, `tau`, `actor_lr`, `critic_lr`, `target_network_update_freq`)
with DDPG's own knobs, `DDPG` reuses SAC's (i.e. DQN's) training step

    sample from EnvRunners -> add episodes to the replay buffer ->
    sample a train batch -> Learner update (+ soft target update) -> sync weights

and the RLModule / Learner in this package replace SAC's stochastic actor and
entropy terms with a deterministic actor and the loss -Q(s, mu(s)).
"""

from __future__ import annotations

from typing import Optional, Type, Union

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.sac.sac import SAC, SACConfig
from ray.rllib.core.learner import Learner
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME
from ray.rllib.utils.typing import RLModuleSpecType

from rl.ddpg.exploration import NOISE_TYPES, noise_mask_fraction


class DDPGConfig(SACConfig):
    """Configuration of the DDPG algorithm.

    Example:
        >>> from rl.ddpg import DDPGConfig
        >>> config = (
        ...     DDPGConfig()
        ...     .environment("Pendulum-v1")
        ...     .training(tau=0.005, actor_lr=1e-3, critic_lr=1e-3, noise_type="gaussian")
        ... )
        >>> algo = config.build()
    """

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or DDPG)
        # DDPG-specific settings (`.training()`).
        self.hidden_size = 256
        self.noise_type = "mask"
        self.noise_mask_initial = 0.5
        self.noise_mask_decay = 1e-4
        self.gaussian_sigma = 0.1
        # Different defaults from SAC: one critic, uniform replay, faster targets.
        self.twin_q = False
        self.tau = 5e-3
        self.actor_lr = 1e-4
        self.critic_lr = 1e-3
        self.replay_buffer_config = {"type": "EpisodeReplayBuffer", "capacity": 100_000}
        self.num_steps_sampled_before_learning_starts = 1000

    @override(SACConfig)
    def training(
        self,
        *,
        hidden_size: Optional[int] = NotProvided,
        noise_type: Optional[str] = NotProvided,
        noise_mask_initial: Optional[float] = NotProvided,
        noise_mask_decay: Optional[float] = NotProvided,
        gaussian_sigma: Optional[float] = NotProvided,
        **kwargs,
    ) -> "DDPGConfig":
        """Sets the training-related configuration.

        Args:
            hidden_size: Width of the shared state embedding and of the actor's
                and critic's hidden layers.
            noise_type: Exploration noise: "mask" (the paper's noisy mask),
                "gaussian" (additive N(0, gaussian_sigma)) or "none".
            noise_mask_initial: Fraction of action dimensions dropped at the
                first exploration step, in [0, 1).
            noise_mask_decay: Per-env-step decay of that fraction, in [0, 1):
                fraction(t) = noise_mask_initial * (1 - noise_mask_decay) ** t.
                0 keeps the fraction constant.
            gaussian_sigma: Standard deviation of the Gaussian action noise.
            **kwargs: Everything `SACConfig.training()` takes (tau, actor_lr,
                critic_lr, gamma, replay_buffer_config, ...).

        Returns:
            This updated DDPGConfig object.
        """
        super().training(**kwargs)
        if hidden_size is not NotProvided:
            self.hidden_size = hidden_size
        if noise_type is not NotProvided:
            self.noise_type = noise_type
        if noise_mask_initial is not NotProvided:
            self.noise_mask_initial = noise_mask_initial
        if noise_mask_decay is not NotProvided:
            self.noise_mask_decay = noise_mask_decay
        if gaussian_sigma is not NotProvided:
            self.gaussian_sigma = gaussian_sigma
        return self

    @override(AlgorithmConfig)
    def validate(self) -> None:
        """Rejects DDPG settings that cannot work, with a sentence saying what to change."""
        super().validate()
        if self.noise_type not in NOISE_TYPES:
            self._value_error(f"`noise_type` must be one of {', '.join(NOISE_TYPES)}, got {self.noise_type!r}.")
        if not 0.0 <= self.noise_mask_initial < 1.0:
            self._value_error(
                f"`noise_mask_initial` is the fraction of action dimensions dropped and must be in [0, 1), "
                f"got {self.noise_mask_initial}."
            )
        if not 0.0 <= self.noise_mask_decay < 1.0:
            self._value_error(
                f"`noise_mask_decay` is a per-step decay rate and must be in [0, 1), got {self.noise_mask_decay}."
            )
        if self.gaussian_sigma < 0.0:
            self._value_error(f"`gaussian_sigma` must be >= 0, got {self.gaussian_sigma}.")
        if not 0.0 < self.tau <= 1.0:
            self._value_error(f"`tau` (soft target update rate) must be in (0, 1], got {self.tau}.")
        if self.actor_lr <= 0.0 or self.critic_lr <= 0.0:
            self._value_error(
                f"`actor_lr` and `critic_lr` must be positive, got {self.actor_lr} and {self.critic_lr}."
            )
        if int(self.hidden_size) < 1:
            self._value_error(f"`hidden_size` must be a positive integer, got {self.hidden_size}.")
        if self.twin_q:
            self._value_error("DDPG has a single critic: set `twin_q=False` (twin critics are TD3/SAC).")

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpecType:
        if self.framework_str == "torch":
            from rl.ddpg.torch.default_ddpg_torch_rl_module import DefaultDDPGTorchRLModule

            return RLModuleSpec(module_class=DefaultDDPGTorchRLModule)
        raise ValueError(f"The framework {self.framework_str} is not supported by DDPG. Use `torch`.")

    @override(AlgorithmConfig)
    def get_default_learner_class(self) -> Union[Type[Learner], str]:
        if self.framework_str == "torch":
            from rl.ddpg.torch.ddpg_torch_learner import DDPGTorchLearner

            return DDPGTorchLearner
        raise ValueError(f"The framework {self.framework_str} is not supported by DDPG. Use `torch`.")

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self):
        return super()._model_config_auto_includes | {
            "hidden_size": self.hidden_size,
            "noise_type": self.noise_type,
            "noise_mask_initial": self.noise_mask_initial,
            "noise_mask_decay": self.noise_mask_decay,
            "gaussian_sigma": self.gaussian_sigma,
        }


class DDPG(SAC):
    """DDPG: SAC's off-policy training step with DDPG's module and learner.

    Each iteration also reports `noise_mask_fraction`, the exploration mask's
    current fraction of dropped dimensions (0 unless `noise_type="mask"`).
    """

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> DDPGConfig:
        return DDPGConfig()

    @override(SAC)
    def training_step(self) -> None:
        super().training_step()
        steps = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
        fraction = (
            noise_mask_fraction(steps, self.config.noise_mask_initial, self.config.noise_mask_decay)
            if self.config.noise_type == "mask"
            else 0.0
        )
        self.metrics.log_value("noise_mask_fraction", fraction, window=1)
