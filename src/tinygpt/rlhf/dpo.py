"""Direct Preference Optimization (Rafailov et al. 2023): fit the policy to the preference pairs directly,
with no reward model and no sampling.

The policy's implicit reward of a continuation y of prompt x is beta * log(policy(y|x) / ref(y|x)), ref
a frozen copy of the starting model; the loss is the Bradley-Terry loss of those rewards,
-log sigmoid(reward(chosen) - reward(rejected)). The policy that minimises it is the one PPO aims at: the
best policy under a KL penalty of strength beta to ref, for the Bradley-Terry reward of the same pairs.

A continuation's log-prob is the sum over its own tokens: up to and including its end-of-text when the
sample ended early (the model chose to stop, and that choice is part of what is preferred), all of them
when it ran to the length limit. The right padding after it never counts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset

from tinygpt.core.errors import TinyGptError
from tinygpt.core.modes import eval_mode
from tinygpt.data.batches import RandomWindows
from tinygpt.model.gpt import GPT
from tinygpt.model.heads import FullHead, output_head
from tinygpt.rlhf.config import DpoParams
from tinygpt.rlhf.finetune import ptx_loss
from tinygpt.rlhf.reward_model import pad_sequences
from tinygpt.rlhf.tuning import finetuning_optimizer, freeze_embeddings, lr_factor
from tinygpt.rlhf.rollout import token_logprobs


class PairDataError(TinyGptError):
    pass


@dataclass
class PreferenceTensors:
    """Pairs as prompt + continuation ids, chosen and rejected padded to one width with end-of-text."""

    chosen: torch.Tensor  # (n, width) ids
    rejected: torch.Tensor  # (n, width)
    chosen_mask: torch.Tensor  # (n, width - prompt_len) 1.0 on the continuation's own tokens
    rejected_mask: torch.Tensor
    prompt_len: int
    label: torch.Tensor  # (n,) probability that chosen is preferred: 1.0, or the reward model's (soft labels)

    def __len__(self) -> int:
        return self.chosen.size(0)

    def rows(self, index: torch.Tensor) -> "PreferenceTensors":
        return PreferenceTensors(self.chosen[index], self.rejected[index], self.chosen_mask[index],
                                 self.rejected_mask[index], self.prompt_len, self.label[index])


def preference_tensors(
    pairs: Dataset, device: torch.device | str = "cpu", soft_labels: bool = False
) -> PreferenceTensors:
    """The pairs' ids (columns prompt_ids, chosen_ids, rejected_ids) as padded tensors and masks, and their
    labels: 1.0 (chosen is preferred), or with `soft_labels` sigmoid(chosen_score - rejected_score), the
    Bradley-Terry probability of the scores (reward-ranked pairs, whose scores are normalised rewards)."""
    prompts = pairs["prompt_ids"]
    prompt_len = prompt_length(prompts)
    chosen = [p + c for p, c in zip(prompts, pairs["chosen_ids"])]
    rejected = [p + r for p, r in zip(prompts, pairs["rejected_ids"])]
    ids, last = pad_sequences(chosen + rejected, device)  # one call: chosen and rejected get the same width
    mask = continuation_mask(last, prompt_len, ids.size(1))
    n = len(prompts)
    label = torch.ones(n, device=ids.device)
    if soft_labels:
        margin = torch.tensor(pairs["chosen_score"]) - torch.tensor(pairs["rejected_score"])
        label = torch.sigmoid(margin).float().to(ids.device)
    return PreferenceTensors(ids[:n], ids[n:], mask[:n], mask[n:], prompt_len, label)


def prompt_length(prompts: list[list[int]]) -> int:
    """The one prompt length of all pairs: the log-probs read every row's continuation from one position."""
    lengths = sorted({len(p) for p in prompts})
    if len(lengths) != 1:
        raise PairDataError(f"DPO needs prompts of one length (preferences.prompt_tokens); got lengths {lengths}")
    return lengths[0]


def continuation_mask(last: torch.Tensor, prompt_len: int, width: int) -> torch.Tensor:
    """1.0 on each row's continuation, from `prompt_len` to its last id (`last`, a position in the row).

    For preferences.py's pairs, whose continuations stop after their first end-of-text, this is
    rollout.response_mask; counting the stored ids instead of looking for the end-of-text also leaves out
    the padding after a continuation that is shorter than the others without having ended.
    """
    positions = torch.arange(prompt_len, width, device=last.device)
    return (positions[None, :] <= last[:, None]).float()


def pair_sequences(data: PreferenceTensors) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen rows then the rejected ones, as one batch of sequences and continuation masks."""
    return torch.cat([data.chosen, data.rejected]), torch.cat([data.chosen_mask, data.rejected_mask])


def pair_logprobs(
    model: GPT, data: PreferenceTensors, precision: str, head: FullHead | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the chosen and of the rejected continuations, in one forward."""
    sequences, mask = pair_sequences(data)
    logp = (token_logprobs(model, sequences, data.prompt_len, 1.0, precision, head) * mask).sum(dim=1)
    return logp[: len(data)], logp[len(data) :]


@torch.no_grad()
def all_logprobs(
    model: GPT, data: PreferenceTensors, batch_size: int, precision: str, head: FullHead | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs (n,) of every pair's chosen and rejected continuation, `batch_size` pairs at a time, in
    eval mode. For the reference they are fixed, so training computes them once, not a second forward a step."""
    chosen, rejected = [], []
    with eval_mode(model):
        for index in torch.arange(len(data), device=data.chosen.device).split(batch_size):
            c, r = pair_logprobs(model, data.rows(index), precision, head)
            chosen.append(c)
            rejected.append(r)
    return torch.cat(chosen), torch.cat(rejected)


def dpo_loss(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor, beta: float, label: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The mean DPO loss over the pairs, and the implicit rewards' accuracy, margin and means.

    With `label` p < 1 (per pair) the loss is the cross-entropy against p, as in conservative DPO's label
    smoothing (Mitchell 2023), here with each pair's own p. Hard labels drive the margin up without end;
    soft ones stop it where sigmoid(margin) = p, i.e. where beta * log(policy / reference) differs between
    the two continuations by their reward difference: the optimum of PPO's objective E[reward] - beta * KL,
    pair by pair (reward-model distillation, Fisch et al. 2024).
    """
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    margin = chosen_reward - rejected_reward
    if label is None:
        loss = -F.logsigmoid(margin).mean()
    else:
        loss = -(label * F.logsigmoid(margin) + (1 - label) * F.logsigmoid(-margin)).mean()
    stats = {
        "accuracy": (margin > 0).float().mean(),
        "margin": margin.mean(),
        "chosen_reward": chosen_reward.mean(),
        "rejected_reward": rejected_reward.mean(),
    }
    return loss, {key: value.item() for key, value in stats.items()}


def evaluate_dpo(
    policy: GPT, data: PreferenceTensors, reference: tuple[torch.Tensor, torch.Tensor], beta: float,
    batch_size: int, precision: str,
) -> dict[str, float]:
    """DPO loss and implicit-reward stats over all of `data` (held-out pairs, say); `reference` is the
    reference's all_logprobs of the same pairs."""
    loss, stats = dpo_loss(*all_logprobs(policy, data, batch_size, precision), *reference, beta)
    return {"loss": loss.item(), **stats}


def pair_summary(pairs: Dataset) -> dict[str, float]:
    """How many pairs DPO trained on and their mean scores (the oracle's for labelled pairs, the reward
    model's for reward-ranked ones)."""
    return {"pairs": len(pairs), "chosen_score_mean": float(np.mean(pairs["chosen_score"])),
            "rejected_score_mean": float(np.mean(pairs["rejected_score"]))}


def eval_steps(total_steps: int, eval_interval: int) -> set[int]:
    """Numbers of updates done after which the caller evaluates: 0, every eval_interval, and the last."""
    every = range(0, total_steps, eval_interval) if eval_interval > 0 else [0]
    return set(every) | {total_steps}


def pair_batches(n_pairs: int, batch_size: int, epochs: int, seed: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(epoch, pair indices) of every step: `epochs` passes over the pairs, each in a new seeded order."""
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        for index in torch.randperm(n_pairs, generator=generator).split(batch_size):
            yield epoch, index


def train_dpo(
    policy: GPT, ref: GPT, pairs: Dataset, dpo_params: DpoParams, precision: str,
    on_step: Callable[[int, dict], None] = lambda step, stats: None,
    on_eval: Callable[[int, GPT], None] | None = None, corpus: np.ndarray | None = None,
) -> list[dict]:
    """`dpo_params.epochs` shuffled passes of DPO over the pairs; returns one row of stats per step.
    Reward-ranked pairs (dpo_params.pairs) train on the reward model's soft labels, the labelled pairs on
    hard ones (preference_tensors). With `corpus` (train-split tokens) and dpo_params.ptx_coef > 0, every
    step also fits the corpus, as PPO-ptx does (finetune.ptx_loss).

    Only the transformer blocks and the final LayerNorm train (see dpo_optimizer). The policy stays in
    eval mode: dropout would make the policy's log-probs noisy where the reference's are not, and the
    first loss would not be log 2. `on_eval(updates_done, policy)` runs before the first step, every
    `eval_interval` steps and after the last.

    The log-probs go through model.heads' compact head where the frozen embedding has enough repeated
    rows (a model pretrained over the training vocabulary): the same numbers as the full head, less work.
    """
    device = next(policy.parameters()).device
    # freezes the embedding the compact head copies
    optimizer = dpo_optimizer(policy, dpo_params.learning_rate, dpo_params.logit_bias_lr)
    head, ref_head = output_head(policy, compact=True), output_head(ref, compact=True)
    pretrain = None
    if corpus is not None and dpo_params.ptx_coef > 0:
        pretrain = RandomWindows(corpus, policy.config.block_size, dpo_params.ptx_batch_size, dpo_params.seed)
    data = preference_tensors(pairs, device, soft_labels=dpo_params.pairs == "reward_ranked")
    reference = all_logprobs(ref, data, dpo_params.batch_size, precision, ref_head)
    total = dpo_params.epochs * math.ceil(len(data) / dpo_params.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, dpo_params.warmup_steps, total))
    evals = eval_steps(total, dpo_params.eval_interval)
    history: list[dict] = []
    with eval_mode(policy):
        for epoch, index in pair_batches(len(data), dpo_params.batch_size, dpo_params.epochs, dpo_params.seed):
            step = len(history)
            if on_eval is not None and step in evals and step < total:  # the last one comes after the loop
                on_eval(step, policy)
            index = index.to(device)
            row = {"step": step, "epoch": epoch, "lr": schedule.get_last_lr()[0]}
            batch_reference = (reference[0][index], reference[1][index])
            row.update(dpo_step(policy, optimizer, data.rows(index), batch_reference, dpo_params, precision, head,
                                pretrain))
            schedule.step()
            history.append(row)
            on_step(step, row)
        if on_eval is not None:
            on_eval(len(history), policy)
    return history


def dpo_optimizer(policy: GPT, learning_rate: float, logit_bias_lr: float = 0.0) -> torch.optim.Adam:
    """Adam over the policy without its token and position embeddings (which it freezes), and with
    `logit_bias_lr` > 0 also over a per-token logit bias it adds to the policy (GPT.add_logit_bias), at
    that learning rate.

    The token embedding is also the LM head: a DPO step on it moves the logit of every one of the 50k
    tokens, most of which no pair contains, and Adam's per-weight normalisation makes those rare-token
    updates as large as the common ones. Freezing it keeps the output vocabulary the language model
    learned, and DPO trains the same weights as PPO (tuning.freeze_embeddings), so the two compare.
    The logit bias (tuning.finetuning_optimizer) moves one word's logit at a time.
    """
    freeze_embeddings(policy)
    return finetuning_optimizer(list(policy.parameters()), learning_rate, policy, logit_bias_lr)


def dpo_step(
    policy: GPT, optimizer: torch.optim.Optimizer, batch: PreferenceTensors,
    reference: tuple[torch.Tensor, torch.Tensor], dpo_params: DpoParams, precision: str, head: FullHead,
    pretrain: RandomWindows | None = None,
) -> dict[str, float]:
    """One optimizer step on the DPO loss of one batch of pairs, plus ptx_coef times the corpus loss when
    `pretrain` is given: the DPO loss, its stats, the ptx loss and the gradient norm."""
    chosen, rejected = pair_logprobs(policy, batch, precision, head)
    loss, stats = dpo_loss(chosen, rejected, *reference, dpo_params.beta, batch.label)
    total = loss
    if pretrain is not None:
        lm_loss = ptx_loss(policy, pretrain, precision, head)
        stats["ptx_loss"] = lm_loss.item()
        total = total + dpo_params.ptx_coef * lm_loss
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    trained = [w for group in optimizer.param_groups for w in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(trained, dpo_params.grad_clip)
    optimizer.step()
    return {"loss": loss.item(), **stats, "grad_norm": grad_norm.item(),
            "logp_chosen": chosen.mean().item(), "logp_rejected": rejected.mean().item()}
