"""Training batches: random windows of a token file, and fixed windows for comparable loss estimates.

Why random windows rather than an epoch over disjoint windows: with 300k training tokens and a context
of a few hundred, disjoint windows would always cut the text at the same offsets, so a token would be
seen at the same position of the context every epoch; random starts show every token at every
position. The sampler's whole state is one generator state, so a checkpoint resumes it exactly, and
over the few epochs a pretrain run makes, coverage is close to uniform (each token is missed by all
windows of an epoch with probability ~exp(-1) per epoch, never systematically).
"""
from __future__ import annotations

import numpy as np
import torch

from tinygpt.core.errors import TinyGptError


def check_length(tokens: np.ndarray, block_size: int, name: str) -> None:
    """A window needs block_size inputs plus one target."""
    if len(tokens) < block_size + 1:
        raise TinyGptError(
            f"{name} has {len(tokens)} tokens, fewer than model.block_size + 1 = {block_size + 1}; "
            "lower model.block_size, use a larger corpus, or give the split more of it (split.val_fraction)"
        )


def windows_at(tokens: np.ndarray, starts: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (len(starts), block_size) and the targets shifted one token to the right, as int64."""
    rows = np.stack([np.asarray(tokens[s : s + block_size + 1], dtype=np.int64) for s in starts])
    return torch.from_numpy(rows[:, :-1].copy()), torch.from_numpy(rows[:, 1:].copy())


class RandomWindows:
    """Batches of `batch_size` windows with uniformly random starts, from a seeded generator; with
    `input_noise` > 0, that fraction of the input tokens is replaced by unigram draws (targets stay)."""

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int, name: str = "train.bin",
                 input_noise: float = 0.0):
        check_length(tokens, block_size, name)
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.input_noise = input_noise
        self.rng = np.random.default_rng(seed)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        # The last start that still leaves a target after the window: len - block_size - 1.
        starts = self.rng.integers(0, len(self.tokens) - self.block_size, size=self.batch_size)
        x, y = windows_at(self.tokens, starts, self.block_size)
        if self.input_noise > 0:  # no draws otherwise, so the batches of a noiseless run never change
            x = noised(x, self.tokens, self.input_noise, self.rng)
        return x, y

    def state_dict(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]


def noised(inputs: torch.Tensor, tokens: np.ndarray, fraction: float, rng: np.random.Generator) -> torch.Tensor:
    """Inputs with each token replaced, with probability `fraction`, by the token at a uniformly random
    position of `tokens`, which is a draw from the corpus's unigram distribution. Data noising as
    smoothing (Xie et al., 2017): the model cannot rely on any single context token, which regularises a
    model that sees a small corpus many times, at no cost in compute. Targets are left clean."""
    replace = rng.random(inputs.shape) < fraction
    out = inputs.clone()
    out[torch.from_numpy(replace)] = torch.from_numpy(
        np.asarray(tokens[rng.integers(0, len(tokens), size=int(replace.sum()))], dtype=np.int64))
    return out


def fixed_batches(
    tokens: np.ndarray, block_size: int, batch_size: int, n_batches: int, seed: int, name: str
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same `n_batches` batches on every call with the same arguments: each estimate of the loss
    during training scores the same windows, so its curve shows learning, not sampling noise."""
    check_length(tokens, block_size, name)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(tokens) - block_size, size=(n_batches, batch_size))
    return [windows_at(tokens, row, block_size) for row in starts]
