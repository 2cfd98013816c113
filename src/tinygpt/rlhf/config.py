"""Params of the RLHF stages (preferences, reward, rlhf); torch-free.

Each class is a section of params.yaml: its comments say what the keys mean, and the defaults here are
its values (tests/pipeline/test_params.py checks that they agree)."""
from __future__ import annotations

from dataclasses import dataclass

from tinygpt.core.checks import (DEVICES, PRECISIONS, non_negative, one_of,
                                 positive, require, unit_interval)


@dataclass
class PreferencesParams:
    """params.yaml `preferences`: prompts cut from the text, sampled continuations, pairs labelled by an
    oracle."""

    oracle: str = "sentiment"
    keyword: str = "love"
    min_margin: float = 0.0
    prompt_tokens: int = 8
    continuation_tokens: int = 24  # prompt_tokens + this + 1 must fit model.block_size (check_fits)
    train_prompts: int = 1536
    val_prompts: int = 128
    samples_per_prompt: int = 4  # >= 2
    temperature: float = 1.0
    batch_size: int = 64
    seed: int = 1337
    device: str = "auto"
    precision: str = "auto"

    def validate(self) -> None:
        one_of("preferences.oracle", self.oracle, ("sentiment", "brevity", "keyword"))
        if self.oracle == "keyword":
            require(bool(self.keyword.strip()), "preferences.keyword", "a non-empty word", self.keyword)
        non_negative("preferences.min_margin", self.min_margin)
        for key in ("prompt_tokens", "continuation_tokens", "train_prompts", "val_prompts", "batch_size"):
            positive(f"preferences.{key}", getattr(self, key))
        require(self.samples_per_prompt >= 2, "preferences.samples_per_prompt", "an integer >= 2", self.samples_per_prompt)
        positive("preferences.temperature", self.temperature)
        one_of("preferences.device", self.device, DEVICES)
        one_of("preferences.precision", self.precision, PRECISIONS)


@dataclass
class RewardParams:
    """params.yaml `reward`: the pretrained transformer plus a scalar head, trained on the pairs
    (Bradley-Terry)."""

    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    epochs: int = 1
    batch_size: int = 16
    warmup_steps: int = 10
    grad_clip: float = 1.0
    seed: int = 1337
    device: str = "auto"
    precision: str = "auto"

    def validate(self) -> None:
        for key in ("learning_rate", "epochs", "batch_size", "grad_clip"):
            positive(f"reward.{key}", getattr(self, key))
        non_negative("reward.weight_decay", self.weight_decay)
        non_negative("reward.warmup_steps", self.warmup_steps)
        one_of("reward.device", self.device, DEVICES)
        one_of("reward.precision", self.precision, PRECISIONS)


@dataclass
class RlhfParams:
    """params.yaml `rlhf`: PPO against the reward model with a per-token KL penalty to the frozen
    pretrained model."""

    steps: int = 80
    batch_size: int = 32
    minibatch_size: int = 16  # divides batch_size
    ppo_epochs: int = 2
    temperature: float = 1.0
    learning_rate: float = 2e-4
    train_embeddings: bool = False
    adaptive_kl: bool = True
    init_kl_coef: float = 0.05
    target_kl: float = 4.0
    kl_horizon: int = 500
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    ptx_coef: float = 0.5
    ptx_batch_size: int = 16
    grad_clip: float = 1.0
    eval_samples_per_prompt: int = 2
    table_samples: int = 8
    seed: int = 1337
    device: str = "auto"
    precision: str = "auto"

    def validate(self) -> None:
        for key in ("steps", "batch_size", "minibatch_size", "ppo_epochs", "temperature", "learning_rate",
                    "target_kl", "kl_horizon", "grad_clip", "eval_samples_per_prompt"):
            positive(f"rlhf.{key}", getattr(self, key))
        require(self.batch_size % self.minibatch_size == 0, "rlhf.minibatch_size",
                f"a divisor of rlhf.batch_size = {self.batch_size}", self.minibatch_size)
        for key in ("init_kl_coef", "vf_coef", "ptx_coef", "table_samples"):
            non_negative(f"rlhf.{key}", getattr(self, key))
        positive("rlhf.ptx_batch_size", self.ptx_batch_size)
        for key in ("gamma", "lam"):
            unit_interval(f"rlhf.{key}", getattr(self, key))
        for key in ("cliprange", "cliprange_value"):
            positive(f"rlhf.{key}", getattr(self, key))
        one_of("rlhf.device", self.device, DEVICES)
        one_of("rlhf.precision", self.precision, PRECISIONS)
