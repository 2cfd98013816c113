"""RLHF with PPO: the policy (the pretrained GPT plus a value head) is trained to raise the reward model's
score while a per-token KL penalty keeps it near a frozen copy of the pretrained model (the reference).

One step = collect a batch of rollouts (sample, score with the reward model, KL-penalised rewards, GAE),
then `ppo_epochs` passes of clipped policy and value updates over shuffled minibatches of it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn

from tinygpt.core.device import autocast
from tinygpt.data.batches import RandomWindows
from tinygpt.model.gpt import GPT
from tinygpt.model.heads import FullHead, output_head
from tinygpt.rlhf import ppo
from tinygpt.rlhf.config import RlhfParams
from tinygpt.rlhf.oracles import Oracle
from tinygpt.rlhf.reward_model import RewardModel
from tinygpt.rlhf.rollout import Rollout, action_hidden, sample, token_logprobs
from tinygpt.rlhf.tuning import finetuning_optimizer, freeze_embeddings


class PolicyWithValue(nn.Module):
    """The policy's GPT and a value head reading the same hidden states (TRL's shared-trunk layout).

    `head` turns the hidden states into log-probs: the full LM head, or the exact compact one once the
    embeddings are frozen (train_ppo picks)."""

    def __init__(self, gpt: GPT):
        super().__init__()
        self.gpt = gpt
        self.head: FullHead = FullHead(gpt)
        self.value_head = nn.Linear(gpt.config.n_embd, 1)
        nn.init.zeros_(self.value_head.weight)  # V = 0 at the start: the first advantages are the returns
        nn.init.zeros_(self.value_head.bias)

    def forward(self, sequences: torch.Tensor, prompt_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states (batch, response_len, n_embd) and values (batch, response_len) at each action."""
        hidden = action_hidden(self.gpt, sequences, prompt_len)
        with torch.autocast(device_type=sequences.device.type, enabled=False):
            values = self.value_head(hidden.float()).squeeze(-1)
        return hidden, values


@dataclass
class Experience:
    """One batch of rollouts with everything PPO's update needs (all (batch, response_len) but sequences)."""

    sequences: torch.Tensor
    mask: torch.Tensor
    logp: torch.Tensor  # under the policy that sampled them
    values: torch.Tensor
    advantages: torch.Tensor  # whitened
    returns: torch.Tensor
    prompt_len: int

    def rows(self, index: torch.Tensor) -> "Experience":
        parts = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "prompt_len"}
        return Experience(**{k: v[index] for k, v in parts.items()}, prompt_len=self.prompt_len)


@torch.no_grad()
def score_rollout(
    policy: PolicyWithValue, ref: GPT, reward_model: RewardModel, rollout: Rollout, temperature: float,
    precision: str, ref_head: FullHead | None = None,
) -> dict[str, torch.Tensor]:
    """The policy's log-probs, entropies and values, the reference's log-probs and the reward scores."""
    with autocast(rollout.sequences.device, precision):
        hidden, values = policy(rollout.sequences, rollout.prompt_len)
        scores = reward_model(rollout.sequences, rollout.last_index).float()
        logp = policy.head.logprobs(hidden, rollout.responses, temperature)
        entropy = policy.head.entropy(hidden, temperature)
    ref_logp = token_logprobs(ref, rollout.sequences, rollout.prompt_len, temperature, precision, ref_head)
    return {"logp": logp, "entropy": entropy, "values": values, "ref_logp": ref_logp, "scores": scores}


def collect(
    policy: PolicyWithValue, ref: GPT, reward_model: RewardModel, prompts: torch.Tensor, rlhf_params: RlhfParams,
    max_new_tokens: int, beta: float, oracle: Oracle, generator: torch.Generator, precision: str,
    ref_head: FullHead | None = None,
) -> tuple[Experience, dict[str, float]]:
    """Sample a batch, turn scores and KL into per-token rewards and those into advantages."""
    rollout = sample(policy.gpt, prompts, max_new_tokens, rlhf_params.temperature, generator, precision, policy.head)
    scored = score_rollout(policy, ref, reward_model, rollout, rlhf_params.temperature, precision, ref_head)
    mask = rollout.mask
    rewards, kl = ppo.kl_penalised_rewards(scored["logp"], scored["ref_logp"], scored["scores"], mask, beta)
    if rlhf_params.advantage == "rloo":
        advantages = ppo.rloo_advantages(scored["scores"], kl, mask, beta, rlhf_params.samples_per_prompt)
        returns = advantages  # no critic: the value loss is off (ppo_minibatch)
    else:
        advantages, returns = ppo.gae(rewards, scored["values"], mask, rlhf_params.gamma, rlhf_params.lam)
    experience = Experience(
        rollout.sequences, mask, scored["logp"], scored["values"] * mask,
        ppo.whiten(advantages, mask), returns, rollout.prompt_len,
    )
    gold = oracle.scores(rollout.texts(), rollout.response_ids())
    stats = {
        "reward_model_score": scored["scores"].mean().item(),
        "gold_score": float(np.mean(gold)),
        "kl": kl.sum(dim=1).mean().item(),
        "non_score_reward": (-beta * kl).sum(dim=1).mean().item(),
        "entropy": ppo.masked_mean(scored["entropy"], mask).item(),
        "response_tokens": mask.sum(dim=1).mean().item(),
        "beta": beta,
        "explained_variance": ppo.explained_variance(scored["values"], returns, mask),
    }
    return experience, stats


def ppo_update(
    policy: PolicyWithValue, optimizer: torch.optim.Optimizer, experience: Experience, rlhf_params: RlhfParams,
    generator: torch.Generator, precision: str, pretrain: RandomWindows | None = None,
) -> dict[str, float]:
    """`ppo_epochs` passes of minibatch updates over one batch; returns the mean of each statistic.

    The policy stays in eval mode: with dropout on, the first epoch's ratio would not start at 1.
    """
    totals: dict[str, list[float]] = {}
    n = experience.sequences.size(0)
    for _ in range(rlhf_params.ppo_epochs):
        for index in torch.randperm(n, generator=generator).split(rlhf_params.minibatch_size):
            minibatch = experience.rows(index.to(experience.mask.device))
            stats = ppo_minibatch(policy, optimizer, minibatch, rlhf_params, precision, pretrain)
            for key, value in stats.items():
                totals.setdefault(key, []).append(value)
    return {key: float(np.mean(values)) for key, values in totals.items()}


def ppo_minibatch(
    policy: PolicyWithValue, optimizer: torch.optim.Optimizer, mb: Experience, rlhf_params: RlhfParams,
    precision: str, pretrain: RandomWindows | None = None,
) -> dict[str, float]:
    """One gradient step on the clipped policy loss plus vf_coef times the clipped value loss, plus
    ptx_coef times the language-modelling loss on a batch of the corpus when `pretrain` is given."""
    with autocast(mb.sequences.device, precision):
        hidden, values = policy(mb.sequences, mb.prompt_len)
        logp = policy.head.logprobs(hidden, mb.sequences[:, mb.prompt_len :], rlhf_params.temperature)
    pg_loss, pg_stats = ppo.policy_loss(logp, mb.logp, mb.advantages, mb.mask, rlhf_params.cliprange)
    vf_loss, vf_stats = ppo.value_loss(values, mb.values, mb.returns, mb.mask, rlhf_params.cliprange_value)
    loss = pg_loss + (rlhf_params.vf_coef * vf_loss if rlhf_params.advantage == "gae" else 0.0)
    stats = {"policy_loss": pg_loss, "value_loss": vf_loss, **pg_stats, **vf_stats}
    if pretrain is not None:
        stats["ptx_loss"] = ptx_loss(policy.gpt, pretrain, precision, policy.head)
        loss = loss + rlhf_params.ptx_coef * stats["ptx_loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # Frozen weights have no grad.
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), rlhf_params.grad_clip)
    optimizer.step()
    stats["grad_norm"] = grad_norm
    return {key: float(value.detach()) for key, value in stats.items()}


def ptx_loss(model: GPT, pretrain: RandomWindows, precision: str, head: FullHead | None = None) -> torch.Tensor:
    """Next-token loss on random windows of the corpus: InstructGPT's PPO-ptx term, which keeps the
    policy a language model of the corpus while PPO pulls it toward the reward."""
    head = head or FullHead(model)
    device = next(model.parameters()).device
    x, y = (t.to(device) for t in pretrain.next_batch())
    with autocast(device, precision):
        return -head.logprobs(model.hidden_states(x), y).mean()


def kl_controller(rlhf_params: RlhfParams) -> ppo.AdaptiveKLController | ppo.FixedKLController:
    if rlhf_params.adaptive_kl:
        return ppo.AdaptiveKLController(rlhf_params.init_kl_coef, rlhf_params.target_kl, rlhf_params.kl_horizon)
    return ppo.FixedKLController(rlhf_params.init_kl_coef)


def prompt_batches(n_prompts: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless batches of prompt indices: shuffled passes over all prompts, a new order each pass."""
    order = np.empty(0, dtype=np.int64)
    while True:
        while len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(n_prompts)])
        yield order[:batch_size]
        order = order[batch_size:]


def train_ppo(
    policy: PolicyWithValue, ref: GPT, reward_model: RewardModel, prompts: np.ndarray, rlhf_params: RlhfParams,
    max_new_tokens: int, oracle: Oracle, precision: str, corpus: np.ndarray | None = None,
    on_step: Callable[[int, dict], None] = lambda step, metrics: None,
    on_eval: Callable[[int, PolicyWithValue], None] = lambda step, policy: None,
) -> list[dict]:
    """`rlhf_params.steps` PPO steps on rollouts of `prompts` (n, prompt_len); returns one row of metrics
    per step.

    With `corpus` (train-split tokens) and rlhf_params.ptx_coef > 0, every update also fits the corpus (PPO-ptx).
    `on_eval(steps_done, policy)` is called every `rlhf_params.eval_interval` steps and after the last.
    """
    device = next(policy.parameters()).device
    policy.eval()  # no dropout anywhere in PPO (see ppo_update)
    torch.manual_seed(rlhf_params.seed)
    generator = torch.Generator(device).manual_seed(rlhf_params.seed)
    shuffler = torch.Generator().manual_seed(rlhf_params.seed + 1)
    freeze_embeddings(policy.gpt)  # the compact head is exact only while the embedding it copied stays frozen
    policy.head = output_head(policy.gpt, compact=True)
    ref_head = output_head(ref, compact=True)
    optimizer = finetuning_optimizer(list(policy.parameters()), rlhf_params.learning_rate, policy.gpt,
                                     rlhf_params.logit_bias_lr)
    controller = kl_controller(rlhf_params)
    group = rlhf_params.samples_per_prompt  # each prompt's rollouts sit side by side (rloo_advantages)
    batches = prompt_batches(len(prompts), rlhf_params.batch_size // group, np.random.default_rng(rlhf_params.seed))
    pretrain = None
    if corpus is not None and rlhf_params.ptx_coef > 0:
        pretrain = RandomWindows(corpus, policy.gpt.config.block_size, rlhf_params.ptx_batch_size, rlhf_params.seed)
    history = []
    for step in range(rlhf_params.steps):
        batch = torch.as_tensor(prompts[next(batches)], device=device).repeat_interleave(group, dim=0)
        experience, stats = collect(
            policy, ref, reward_model, batch, rlhf_params, max_new_tokens, controller.value, oracle, generator,
            precision, ref_head,
        )
        stats.update(ppo_update(policy, optimizer, experience, rlhf_params, shuffler, precision, pretrain))
        controller.update(stats["kl"], rlhf_params.batch_size)
        history.append({"step": step, **stats})
        on_step(step, stats)
        done = step + 1
        if done % rlhf_params.eval_interval == 0 or done == rlhf_params.steps:
            on_eval(done, policy)
    return history
