"""The GPT architecture's configuration (torch-free, so params can be loaded without importing torch)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tinygpt.core.errors import TinyGptError


class ConfigError(TinyGptError, ValueError):
    pass


@dataclass
class GPTConfig:
    """Shape of a GPT-2-style decoder: the `model` section of params.yaml, whose comments say what the
    keys mean. The defaults are its values (tests/pipeline/test_params.py checks) and the `default` preset."""

    vocab_size: int = 50257
    block_size: int = 128
    n_layer: int = 6
    n_head: int = 2
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    # a learned bias on every token's logit; GPT-2 has none, finetuning adds one (dpo.logit_bias_lr, GPT.add_logit_bias)
    logit_bias: bool = False

    def validate(self, prefix: str = "model") -> None:
        for key in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, key)
            if value <= 0:
                raise ConfigError(f"{prefix}.{key} = {value} is invalid; allowed: an integer > 0")
        if self.n_embd % self.n_head != 0:
            raise ConfigError(
                f"{prefix}.n_embd = {self.n_embd} is not divisible by {prefix}.n_head = {self.n_head}; "
                "each attention head needs n_embd / n_head dimensions"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{prefix}.dropout = {self.dropout} is invalid; allowed: [0, 1)")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GPTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown model config keys {sorted(unknown)}; known: {sorted(known)}")
        config = cls(**values)
        config.validate()
        return config


# Named shapes. `default` is GPTConfig() itself, params.yaml's model; `gpt2` is exactly Hugging Face's
# `gpt2` (124,439,808 parameters).
PRESETS: dict[str, GPTConfig] = {
    "default": GPTConfig(),
    "gpt2": GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768, bias=True),
    "gpt2-medium": GPTConfig(vocab_size=50257, block_size=1024, n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": GPTConfig(vocab_size=50257, block_size=1024, n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": GPTConfig(vocab_size=50257, block_size=1024, n_layer=48, n_head=25, n_embd=1600),
}


def preset(name: str, **overrides) -> GPTConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset '{name}'; known: {', '.join(PRESETS)}")
    config = dataclasses.replace(PRESETS[name], **overrides)
    config.validate()
    return config
