"""Params of the sft stage (the sft section of params.yaml); torch-free. A module of its own: the RLHF
stages read rlhf/config.py, and an SFT setting must not rerun them."""
from __future__ import annotations

from dataclasses import dataclass

from tinygpt.core.checks import non_negative, positive, require


@dataclass
class SftParams:
    """params.yaml `sft`: supervised finetuning of the pretrained model on dialogue pairs cut from the
    text (a speech and the next speaker's reply), the loss on the replies only (tinygpt.rlhf.sft). The
    comments in params.yaml say what the keys mean; the defaults here are its values."""

    learning_rate: float = 3e-4
    epochs: int = 1
    batch_size: int = 16  # pairs per step
    warmup_steps: int = 10
    grad_clip: float = 1.0
    logit_bias_lr: float = 1e-2  # Adam's rate of the per-token logit bias (end-of-text's among them); 0 = none
    eval_interval: int = 50  # steps between reply-NLL evaluations on the selection pairs; 0 = start and end only
    samples: int = 32  # report-set prompts answered by sampling, before and after (reports/sft/samples.md)
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int = 200  # 0 = off
    seed: int = 1337  # the order of the pairs, the selection/report deal and the samples

    def validate(self) -> None:
        for key in ("learning_rate", "epochs", "batch_size", "grad_clip", "samples", "max_new_tokens"):
            positive(f"sft.{key}", getattr(self, key))
        for key in ("warmup_steps", "eval_interval", "top_k", "logit_bias_lr"):
            non_negative(f"sft.{key}", getattr(self, key))
        require(self.temperature > 0, "sft.temperature", "a number > 0", self.temperature)
