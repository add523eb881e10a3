"""DDPG (Deep Deterministic Policy Gradient) on RLlib's new API stack.

Paper: Lillicrap et al. 2015, "Continuous control with deep reinforcement
learning"; used for recommendation by Zhao et al. 2018 and, with a noisy-mask
exploration, by the MSSD paper this project re-implements (section 2.3).

RLlib 2.60 no longer ships DDPG; this package rebuilds it the way RLlib builds
TQC: `DDPGConfig` extends `SACConfig` (the off-policy settings: `tau`,
`actor_lr`, `critic_lr`, `training_intensity`, ...) with DDPG's own knobs, the
RLModule / Learner in this package replace SAC's stochastic actor and entropy
terms with a deterministic actor and the loss -Q(s, mu(s)), and `DDPG` keeps
DQN's (i.e. SAC's) training step

    sample from EnvRunners -> add to the replay buffer ->
    sample a train batch -> Learner update (+ soft target update) -> sync weights

with one change: the replay buffer holds single transitions in numpy columns
(`TransitionReplayBuffer`) and the Learner gets the sampled batch directly,
where SAC replays episode objects through a learner connector; at about a
millisecond per sampled item, that path cost far more than the update itself.

The defaults of the project's settings (hidden size, learning rates, noise,
...) are those of `rl.spec.DDPGModelConfig`, the one place they are written.
"""

from __future__ import annotations

from typing import Optional, Type, Union

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.dqn.dqn import calculate_rr_weights
from ray.rllib.algorithms.sac.sac import SAC, SACConfig
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner import Learner
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    REPLAY_BUFFER_ADD_DATA_TIMER,
    REPLAY_BUFFER_SAMPLE_TIMER,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)
from ray.rllib.utils.typing import RLModuleSpecType

from rl.ddpg.exploration import NOISE_TYPES, noise_mask_fraction
from rl.ddpg.transition_replay_buffer import TransitionReplayBuffer
from rl.spec import DDPGModelConfig

REPLAY_BUFFER_TYPE = f"{TransitionReplayBuffer.__module__}.{TransitionReplayBuffer.__name__}"


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
        defaults = DDPGModelConfig()
        # DDPG-specific settings (`.training()`).
        self.hidden_size = defaults.hidden_size
        self.noise_type = defaults.noise_type
        self.noise_mask_initial = defaults.noise_mask_initial
        self.noise_mask_decay = defaults.noise_mask_decay
        self.gaussian_sigma = defaults.gaussian_sigma
        # SAC's settings with DDPG's defaults: one critic, uniform replay of transitions.
        self.twin_q = False
        self.tau = defaults.tau
        self.actor_lr = defaults.actor_lr
        self.critic_lr = defaults.critic_lr
        self.gamma = defaults.gamma
        self.train_batch_size_per_learner = defaults.batch_size
        self.replay_buffer_config = {"type": REPLAY_BUFFER_TYPE, "capacity": defaults.buffer_size}
        self.num_steps_sampled_before_learning_starts = defaults.learning_starts

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
                critic_lr, gamma, training_intensity, replay_buffer_config
                with a "capacity", ...).

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
        """Rejects DDPG settings that cannot work, with a sentence saying what to change.

        SAC's own checks are skipped on purpose: they require an episode replay
        buffer, which DDPG replaces (see the module docstring).
        """
        AlgorithmConfig.validate(self)
        if self.replay_buffer_config.get("type") != REPLAY_BUFFER_TYPE:
            self._value_error(
                f"DDPG replays single transitions from its own buffer: leave `replay_buffer_config['type']` "
                f"at {REPLAY_BUFFER_TYPE!r} (set only its 'capacity'), got {self.replay_buffer_config.get('type')!r}."
            )
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
        if not 0.0 <= self.gamma <= 1.0:
            self._value_error(f"`gamma` (discount) must be in [0, 1], got {self.gamma}.")
        if self.actor_lr <= 0.0 or self.critic_lr <= 0.0:
            self._value_error(
                f"`actor_lr` and `critic_lr` must be positive, got {self.actor_lr} and {self.critic_lr}."
            )
        if int(self.hidden_size) < 1:
            self._value_error(f"`hidden_size` must be a positive integer, got {self.hidden_size}.")
        if self.twin_q:
            self._value_error("DDPG has a single critic: set `twin_q=False` (twin critics are TD3/SAC).")
        if self.n_step != 1:
            self._value_error(f"DDPG learns from 1-step transitions: set `n_step=1`, got {self.n_step}.")

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
    """DDPG: DQN's off-policy training step over single transitions, with DDPG's module and learner.

    Each iteration also reports `noise_mask_fraction`, the exploration mask's
    current fraction of dropped dimensions (0 unless `noise_type="mask"`).
    """

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> DDPGConfig:
        return DDPGConfig()

    @override(SAC)
    def training_step(self) -> None:
        # As DQN: `training_intensity` (replayed / sampled transitions) sets how many
        # samplings and how many updates one step makes.
        store_weight, sample_and_train_weight = calculate_rr_weights(self.config)
        for _ in range(store_weight):
            with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
                episodes, env_runner_results = synchronous_parallel_sample(
                    worker_set=self.env_runner_group,
                    concat=True,
                    sample_timeout_s=self.config.sample_timeout_s,
                    _uses_new_env_runners=True,
                    _return_metrics=True,
                )
            self.metrics.aggregate(env_runner_results, key=ENV_RUNNER_RESULTS)
            with self.metrics.log_time((TIMERS, REPLAY_BUFFER_ADD_DATA_TIMER)):
                self.local_replay_buffer.add(episodes)

        sampled = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
        if sampled >= self.config.num_steps_sampled_before_learning_starts:
            # All of this step's updates in one Learner call (one round trip): a batch of
            # `sample_and_train_weight` minibatches, each one gradient step. The soft target
            # update follows the call, so `tau` applies once per training step.
            minibatch = self.config.total_train_batch_size
            with self.metrics.log_time((TIMERS, REPLAY_BUFFER_SAMPLE_TIMER)):
                columns = self.local_replay_buffer.sample(sample_and_train_weight * minibatch)
                batch = MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(columns)}, env_steps=len(columns[Columns.REWARDS]))
            with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
                learner_results = self.learner_group.update(
                    batch=batch,
                    minibatch_size=minibatch,
                    num_epochs=1,
                    shuffle_batch_per_epoch=False,  # already drawn at random
                    timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: sampled},
                )
            self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
            with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
                self.env_runner_group.sync_weights(
                    from_worker_or_learner_group=self.learner_group, policies={DEFAULT_MODULE_ID}, inference_only=True
                )

        fraction = (
            noise_mask_fraction(sampled, self.config.noise_mask_initial, self.config.noise_mask_decay)
            if self.config.noise_type == "mask"
            else 0.0
        )
        self.metrics.log_value("noise_mask_fraction", fraction, window=1)
