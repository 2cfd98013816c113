"""What the finetuning stages share (sft, reward, rlhf, dpo): which weights train, their optimizer, and the
learning-rate schedule. A module of its own so that a stage depends only on the finetuning it does."""
from __future__ import annotations

import copy

import torch

from tinygpt.model.gpt import GPT


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup to the full rate, then linear decay to zero at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def freeze_embeddings(model: GPT) -> None:
    """Keep the token and position embeddings fixed: the token embedding is also the LM head, and
    PPO then moves only the transformer blocks (a sixth of the weights of the default 6 x 128 model,
    so a sixth of Adam's work) while the output vocabulary geometry the language model learned stays put."""
    model.transformer.wte.requires_grad_(False)
    model.transformer.wpe.requires_grad_(False)


def finetuning_optimizer(weights: list[torch.nn.Parameter], learning_rate: float, gpt: GPT,
                         logit_bias_lr: float = 0.0) -> torch.optim.Adam:
    """Adam over `weights` at `learning_rate` and, with `logit_bias_lr` > 0, over a per-token logit bias
    added to `gpt` (GPT.add_logit_bias) at that rate, in a group of its own (PPO's and DPO's optimizer).

    Why a bias: GPT.add_logit_bias. Its rate is its own because a logit moves by about the learning rate
    per Adam step, and a word's tilt is about a nat.
    """
    bias = gpt.lm_head.bias
    if bias is not None:  # a model that has one already trains it only at logit_bias_lr
        bias.requires_grad_(False)
    groups = [{"params": [w for w in weights if w is not bias and w.requires_grad], "lr": learning_rate}]
    if logit_bias_lr > 0:
        groups.append({"params": [gpt.add_logit_bias().requires_grad_(True)], "lr": logit_bias_lr})
    device = groups[0]["params"][0].device
    return torch.optim.Adam(groups, lr=learning_rate, fused=device.type in ("cpu", "cuda"))


def frozen_copy(model: GPT) -> GPT:
    """The reference model: a copy of the initial policy that never trains."""
    ref = copy.deepcopy(model).eval()
    for param in ref.parameters():
        param.requires_grad_(False)
    return ref
