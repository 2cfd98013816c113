"""Params of the evaluate and compare stages; torch-free.

Each class is a section of params.yaml: its comments say what the keys mean, and the defaults here are
its values (tests/pipeline/test_params.py checks that they agree)."""
from __future__ import annotations

from dataclasses import dataclass, field

from tinygpt.core.checks import non_negative, positive, require

DEFAULT_PROMPTS = ["To be or not to", "ROMEO:", "First Citizen:\nBefore we proceed any further, hear me speak."]


@dataclass
class EvalParams:
    """params.yaml `eval`: likelihood in context windows, calibration, next-token inspection and samples."""

    context: int = 0
    stride: int = 64  # <= context (when context is not 0)
    batch_size: int = 16
    train_tokens: int = 32768
    train_segments: int = 8
    calibration_bins: int = 15
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    inspect_top_k: int = 10
    sample_max_new_tokens: int = 100
    sample_temperature: float = 0.8
    sample_top_k: int | None = 200
    sample_top_p: float | None = None
    sample_seed: int = 1337

    def validate(self) -> None:
        non_negative("eval.context", self.context)
        positive("eval.stride", self.stride)
        if self.context:
            require(self.stride <= self.context, "eval.stride", f"1..eval.context = {self.context}", self.stride)
        for key in ("batch_size", "train_segments", "calibration_bins", "inspect_top_k"):
            positive(f"eval.{key}", getattr(self, key))
        non_negative("eval.train_tokens", self.train_tokens)
        require(len(self.prompts) > 0, "eval.prompts", "a non-empty list of prompts", self.prompts)
        for i, prompt in enumerate(self.prompts):
            require(bool(prompt), f"eval.prompts[{i}]", "a non-empty string", prompt)
        non_negative("eval.sample_max_new_tokens", self.sample_max_new_tokens)
        non_negative("eval.sample_temperature", self.sample_temperature)
        if self.sample_top_k is not None:
            positive("eval.sample_top_k", self.sample_top_k)
        if self.sample_top_p is not None:
            require(0 < self.sample_top_p <= 1, "eval.sample_top_p", "null or a number in (0, 1]", self.sample_top_p)


@dataclass
class CompareParams:
    """params.yaml `compare`: our model against Hugging Face's GPT-2: fidelity of the export, a pretrained
    GPT-2 through the evaluate stage's code, and speed of the two implementations side by side."""

    pretrained: str = "openai-community/gpt2"
    require_pretrained: bool = False
    allow_download: bool = True
    pretrained_context: int = 0
    fidelity_tokens: int = 0  # not 1: a fidelity check needs at least 2 tokens
    speed_batch_size: int = 8
    speed_seq_len: int = 0
    speed_pretrained: bool = True

    def validate(self) -> None:
        require(bool(self.pretrained.strip()), "compare.pretrained", "a hub id or a local directory", self.pretrained)
        for key in ("pretrained_context", "fidelity_tokens", "speed_seq_len"):
            non_negative(f"compare.{key}", getattr(self, key))
        positive("compare.speed_batch_size", self.speed_batch_size)
        require(self.fidelity_tokens != 1, "compare.fidelity_tokens", "0 (all) or at least 2 tokens", 1)
