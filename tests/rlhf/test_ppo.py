import math

import pytest
import torch

from tinygpt.rlhf import ppo

pytestmark = pytest.mark.usefixtures("single_thread")


def test_gae_and_returns_match_a_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.2, 0.4]])
    mask = torch.ones(1, 3)
    gamma, lam = 0.9, 0.8
    # deltas: r_t + gamma * V_{t+1} - V_t, with V after the last token = 0
    d2 = 1.0 - 0.4
    d1 = 0.0 + 0.9 * 0.4 - 0.2
    d0 = 0.0 + 0.9 * 0.2 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    advantages, returns = ppo.gae(rewards, values, mask, gamma, lam)
    assert advantages[0].tolist() == pytest.approx([a0, a1, a2])
    assert returns[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.4])


def test_gae_with_lambda_one_and_no_discount_gives_reward_to_go():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    values = torch.tensor([[0.3, -0.2, 0.7, 9.0]])  # the padded value is ignored
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    advantages, returns = ppo.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert returns[0].tolist() == pytest.approx([6.0, 5.0, 3.0, 0.0])
    assert advantages[0].tolist() == pytest.approx([5.7, 5.2, 2.3, 0.0])


def test_kl_penalty_per_token_and_score_on_the_last_real_token():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, -3.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # row 1 ended after two tokens
    rewards, kl = ppo.kl_penalised_rewards(logp, ref, torch.tensor([2.0, -1.0]), mask, beta=0.1)
    torch.testing.assert_close(kl, torch.tensor([[0.5, -1.0, 0.0], [1.0, 0.0, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.1, 2.0], [-0.1, -1.0, 0.0]]))
    assert kl.sum(dim=1).tolist() == pytest.approx([-0.5, 1.0])


def test_policy_loss_clips_the_ratio_in_the_direction_of_the_advantage():
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 1.5]]))
    advantages = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    loss, stats = ppo.policy_loss(logp, old, advantages, torch.ones(1, 4), cliprange=0.2)
    # per token max(-A r, -A clip(r)): r=1.5,A>0 -> -1.2 (clipped); r=0.5,A<0 -> 0.8 (clipped);
    # r=1.1 inside -> -1.1; r=1.5,A<0 -> the unclipped 1.5 is larger (no gain from clipping)
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 1.1 + 1.5) / 4)
    assert stats["clip_fraction"].item() == pytest.approx(0.5)
    expected_kl = 0.5 * sum(math.log(r) ** 2 for r in (1.5, 0.5, 1.1, 1.5)) / 4
    assert stats["approx_kl"].item() == pytest.approx(expected_kl)


def test_policy_loss_ignores_padding():
    logp = torch.tensor([[0.1, 5.0]])
    loss, _ = ppo.policy_loss(logp, torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([[1.0, 0.0]]), 0.2)
    assert loss.item() == pytest.approx(-math.exp(0.1))


def test_value_loss_takes_the_worse_of_clipped_and_unclipped():
    old = torch.tensor([[0.0, 0.0]])
    values = torch.tensor([[1.0, 0.1]])
    returns = torch.tensor([[1.0, 1.0]])
    loss, stats = ppo.value_loss(values, old, returns, torch.ones(1, 2), cliprange=0.2)
    # token 0: unclipped error 0, clipped V=0.2 -> 0.64; token 1: inside the clip -> 0.81 both
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2)
    assert stats["value_clip_fraction"].item() == pytest.approx(0.5)


def test_whiten_and_explained_variance():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = ppo.whiten(x, mask)
    assert w[0].tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)  # unbiased std of 1,2,3 is 1
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert ppo.explained_variance(returns, returns, torch.ones(1, 4)) == pytest.approx(1.0)
    assert ppo.explained_variance(torch.full((1, 4), 2.5), returns, torch.ones(1, 4)) == pytest.approx(0.0)


def test_adaptive_kl_controller_moves_beta_toward_the_target():
    ctl = ppo.AdaptiveKLController(0.1, target=4.0, horizon=100)
    ctl.update(current_kl=8.0, n_samples=10)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    ctl = ppo.AdaptiveKLController(0.1, target=4.0, horizon=100)
    ctl.update(current_kl=3.6, n_samples=10)  # error -0.1
    assert ctl.value == pytest.approx(0.1 * (1 - 0.1 * 10 / 100))
    fixed = ppo.FixedKLController(0.1)
    fixed.update(100.0, 10)
    assert fixed.value == 0.1


def test_rloo_baselines_each_sample_by_the_other_samples_of_its_prompt():
    scores = torch.tensor([1.0, 3.0, 0.0, 10.0, 10.0, 10.0])
    kl = torch.tensor([[0.5, 0.5], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    adv = ppo.rloo_advantages(scores, kl, mask, beta=1.0, samples_per_prompt=3)
    # returns 0, 3, 0 | 8, 10, 10; baselines 1.5, 0, 1.5 | 10, 9, 9
    assert adv[:, 0].tolist() == pytest.approx([-1.5, 3.0, -1.5, -2.0, 1.0, 1.0])
    assert adv[1, 1] == 0.0  # padding after an end-of-text gets nothing
    assert adv.view(2, 3, 2)[:, :, 0].sum(dim=1).tolist() == pytest.approx([0.0, 0.0])  # zero-sum per prompt
