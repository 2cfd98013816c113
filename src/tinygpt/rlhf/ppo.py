"""The arithmetic of PPO for language models (Ziegler et al. 2019, Stiennon et al. 2020, TRL's PPO):
per-token KL-penalised rewards, GAE, whitening, the clipped policy and value losses, the KL controllers.

Tensors are (batch, response_len); `mask` is 1.0 on response tokens and 0.0 on the padding after an
end-of-text, so every mean below is over real tokens only.
"""
from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp_min(1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance over the masked entries."""
    n = mask.sum()
    centred = (x - masked_mean(x, mask)) * mask
    return (centred**2).sum() / (n - 1).clamp_min(1.0)


def whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean 0, variance 1 over the masked entries; padding stays 0."""
    return (x - masked_mean(x, mask)) * torch.rsqrt(masked_var(x, mask) + 1e-8) * mask


def rloo_advantages(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float, samples_per_prompt: int
) -> torch.Tensor:
    """REINFORCE leave-one-out advantages (Kool et al. 2019; Ahmadian et al. 2024), no critic.

    Rows come in groups of `samples_per_prompt` continuations of one prompt. A row's return is its score
    minus beta times its summed KL; its baseline is the mean return of the other rows of its group, which
    removes what the prompt alone decides (a prompt that invites a cheerful line) without a value head.
    Every token of a row gets the row's advantage.
    """
    returns = (scores - beta * kl.sum(dim=1)).view(-1, samples_per_prompt)
    baseline = (returns.sum(dim=1, keepdim=True) - returns) / (samples_per_prompt - 1)
    return (returns - baseline).reshape(-1, 1) * mask


def kl_penalised_rewards(
    logp: torch.Tensor, ref_logp: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards -beta * (log pi - log pi_ref), plus each row's score on its last token.

    Returns (rewards, kl): `kl` is the per-token log-ratio, whose sum over a row estimates the row's
    KL(pi || pi_ref) in nats, as its tokens were sampled from pi.
    """
    kl = (logp - ref_logp) * mask
    rewards = -beta * kl
    last = mask.sum(dim=1).long() - 1
    rows = torch.arange(rewards.size(0), device=rewards.device)
    rewards[rows, last] += scores
    return rewards, kl


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation; returns (advantages, returns = advantages + values).

    delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}; the value after
    the last token (and on padding) is 0, since the episode ends there.
    """
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.size(1))):
        next_value = values[:, t + 1] if t + 1 < rewards.size(1) else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, cliprange: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate: mean of max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))."""
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    stats = {
        "clip_fraction": masked_mean((clipped > unclipped).float(), mask),
        "approx_kl": 0.5 * masked_mean(log_ratio**2, mask),  # how far this epoch moved from the rollout
    }
    return loss, stats


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, cliprange: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """0.5 * mean of max((V - R)^2, (V_clipped - R)^2), V_clipped within cliprange of the rollout's V."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange, cliprange)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    return loss, {"value_clip_fraction": masked_mean((clipped_error > unclipped_error).float(), mask)}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns): 1 is a perfect value function, 0 no better than a mean."""
    var_returns = masked_var(returns, mask)
    return float(1.0 - masked_var(returns - values, mask) / var_returns.clamp_min(1e-8))


class FixedKLController:
    """A constant KL coefficient beta."""

    def __init__(self, beta: float):
        self.value = beta

    def update(self, current_kl: float, n_samples: int) -> None:
        pass


class AdaptiveKLController:
    """TRL's proportional controller (Ziegler et al. 2019): beta grows while the KL is above target.

    beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * n_samples / horizon, so over `horizon` rollouts beta
    moves by at most about 20% per unit of error.
    """

    def __init__(self, beta: float, target: float, horizon: int):
        self.value = beta
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_samples: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_samples / self.horizon
