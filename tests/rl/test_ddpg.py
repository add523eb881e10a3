"""DDPG pieces on hand-made inputs: noise-mask schedule, module forwards, losses, soft update, config checks."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl.ddpg import DDPGConfig
from rl.ddpg.default_ddpg_rl_module import QF_ACTOR, QF_PREDS, QF_TARGET_NEXT
from rl.ddpg.exploration import apply_noise_mask, noise_mask_fraction
from rl.ddpg.torch.ddpg_torch_learner import ddpg_losses

OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (20,), np.float32)


def module(**model_config):
    from rl.ddpg.torch.default_ddpg_torch_rl_module import DefaultDDPGTorchRLModule

    config = {"hidden_size": 16, "noise_type": "mask", "noise_mask_initial": 0.5, "noise_mask_decay": 0.01,
              "gaussian_sigma": 0.1, **model_config}
    torch.manual_seed(0)
    m = DefaultDDPGTorchRLModule(observation_space=OBS, action_space=ACT, model_config=config)
    m.make_target_networks()
    return m


def test_noise_mask_fraction_follows_initial_times_one_minus_decay_to_the_t():
    assert noise_mask_fraction(0, 0.5, 0.01) == 0.5
    assert noise_mask_fraction(100, 0.5, 0.01) == pytest.approx(0.5 * 0.99**100)
    assert noise_mask_fraction(10_000, 0.5, 0.0) == 0.5  # no decay: constant noise
    assert noise_mask_fraction(10_000, 0.5, 0.01) < 1e-40  # decays toward zero


def test_noise_mask_drops_exactly_the_fraction_of_dimensions_per_row():
    action = torch.ones(64, 20)
    masked = apply_noise_mask(action, 0.25)
    assert ((masked == 0).sum(dim=1) == 5).all()
    assert not torch.equal(masked[0], masked[1]) or not torch.equal(masked[1], masked[2])  # random per row
    assert torch.equal(apply_noise_mask(action, 0.0), action)


def test_exploration_masks_with_the_decayed_fraction_and_inference_has_no_noise():
    m = module()
    obs = {"obs": torch.rand(32, 3)}
    clean = m.forward_inference(obs)["actions"]
    assert (clean != 0).all()
    at_start = m.forward_exploration(obs, t=0)["actions"]
    assert ((at_start == 0).sum(dim=1) == 10).all()  # 0.5 * 20 dims
    later = m.forward_exploration(obs, t=69)["actions"]  # 0.5 * 0.99**69 = 0.25 -> 5 dims
    assert ((later == 0).sum(dim=1) == 5).all()
    kept = later != 0
    assert torch.equal(later[kept], clean[kept])  # the kept dims are the deterministic action
    assert torch.equal(m.forward_inference(obs)["actions"], clean)  # inference: deterministic, unmasked
    assert torch.equal(module(noise_type="none").forward_exploration(obs, t=0)["actions"], clean)


def test_losses_on_a_hand_made_batch_match_the_td_target_and_minus_q():
    batch = {
        "rewards": torch.tensor([1.0, -1.0, 0.0]),
        "terminateds": torch.tensor([False, False, True]),
    }
    fwd = {
        QF_PREDS: torch.tensor([0.5, 0.0, 2.0]),
        QF_TARGET_NEXT: torch.tensor([1.0, 2.0, 100.0]),
        QF_ACTOR: torch.tensor([0.2, 0.4, 0.6]),
    }
    critic, actor, td = ddpg_losses(batch, fwd, gamma=0.5)
    target = torch.tensor([1.0 + 0.5 * 1.0, -1.0 + 0.5 * 2.0, 0.0])  # terminal: no bootstrap
    assert torch.allclose(td, torch.abs(fwd[QF_PREDS] - target))
    assert critic.item() == pytest.approx(((0.5 - 1.5) ** 2 + 0.0**2 + 2.0**2) / 3)
    assert actor.item() == pytest.approx(-0.4)


def test_actor_loss_moves_only_the_actor_and_critic_loss_only_the_shared_encoder_and_critic():
    m = module()
    batch = {"obs": torch.rand(8, 3), "new_obs": torch.rand(8, 3), "actions": torch.rand(8, 20) * 2 - 1,
             "rewards": torch.rand(8), "terminateds": torch.zeros(8, dtype=torch.bool)}
    critic, actor, _ = ddpg_losses(batch, m.forward_train(batch), gamma=0.9)
    actor.backward(retain_graph=True)
    assert all(p.grad is not None for p in m.pi.parameters())
    assert all(p.grad is None for p in list(m.qf.parameters()) + list(m.state_encoder.parameters()))
    m.zero_grad(set_to_none=True)
    critic.backward()
    assert all(p.grad is None for p in m.pi.parameters())
    assert all(p.grad is not None for p in list(m.qf.parameters()) + list(m.state_encoder.parameters()))
    assert all(p.grad is None for p in m.target_qf.parameters())


def test_soft_update_moves_every_target_net_by_tau_toward_its_main_net(ray_session):
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    config = DDPGConfig().environment(observation_space=OBS, action_space=ACT).training(tau=0.1, hidden_size=8)
    learner = config.build_learner(spaces={"default_policy": (OBS, ACT)})
    m = learner.module["default_policy"]
    with torch.no_grad():
        for p in list(m.state_encoder.parameters()) + list(m.pi.parameters()) + list(m.qf.parameters()):
            p.add_(1.0)  # main nets move away from their targets by exactly 1
    before = {name: p.clone() for name, p in m.named_parameters() if name.startswith("target_")}
    learner.after_gradient_based_update(timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: 1})
    for name, p in m.named_parameters():
        if name.startswith("target_"):
            assert torch.allclose(p, before[name] + 0.1), name  # target += tau * (main - target) = tau * 1


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"noise_mask_initial": 1.5}, "noise_mask_initial"),
        ({"noise_mask_decay": -0.1}, "noise_mask_decay"),
        ({"noise_type": "ou"}, "noise_type"),
        ({"tau": 0.0}, "tau"),
        ({"twin_q": True}, "single critic"),
    ],
)
def test_config_validate_rejects_bad_values_with_a_sentence(settings, message):
    config = DDPGConfig().environment(observation_space=OBS, action_space=ACT).training(**settings)
    with pytest.raises(ValueError, match=message):
        config.validate()


def test_the_three_paper_noise_settings_are_reachable_by_config():
    from rl.spec import NOISE_SETTINGS, DDPGModelConfig

    configs = {name: DDPGModelConfig.from_dict(overrides) for name, overrides in NOISE_SETTINGS.items()}
    assert configs["no noise"].noise_type == "none"
    assert configs["noise"].noise_type == "mask" and configs["noise"].noise_mask_decay == 0.0
    assert configs["noise with decay"].noise_type == "mask" and configs["noise with decay"].noise_mask_decay > 0.0
