"""Sampling from a `GPT` with a key/value cache: each new token runs through the transformer once.

`GPT.generate` re-runs the whole prefix for every new token, which for RLHF's many short rollouts
(8-token prompts, 24-token continuations) is ~15x the transformer work of decoding with a cache. This
module reuses the model's own layers (same weights, same order of operations) and only keeps each
layer's keys and values between steps; a test checks its logits against the full forward pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tinygpt.model import GPT, Block


def _attend(block: Block, x: torch.Tensor, cache: list[torch.Tensor] | None) -> tuple[torch.Tensor, list]:
    """The block's causal self-attention over the cached keys/values plus those of the new positions."""
    attn = block.attn
    batch, seq, width = x.shape
    q, k, v = attn.c_attn(x).split(width, dim=2)
    q, k, v = (t.view(batch, seq, attn.n_head, width // attn.n_head).transpose(1, 2) for t in (q, k, v))
    if cache is not None:
        k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
    # The first call (the prompt) is causal within itself; later calls add one query that sees every key.
    y = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None)
    return attn.c_proj(y.transpose(1, 2).reshape(batch, seq, width)), [k, v]


def forward_cached(model: GPT, idx: torch.Tensor, cache: list | None, start: int) -> tuple[torch.Tensor, list]:
    """Final hidden states of the new positions `idx` (batch, seq), which begin at position `start`."""
    pos = torch.arange(start, start + idx.size(1), device=idx.device)
    x = model.transformer.wte(idx) + model.transformer.wpe(pos)
    new_cache = []
    for i, block in enumerate(model.transformer.h):
        attended, layer_cache = _attend(block, block.ln_1(x), None if cache is None else cache[i])
        x = x + attended
        x = x + block.mlp(block.ln_2(x))
        new_cache.append(layer_cache)
    return model.transformer.ln_f(x), new_cache


def sample_softmax(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """One id per row from softmax(logits / temperature), by inverting the CDF at a uniform draw.

    torch.multinomial draws an exponential variate for every one of the 50,257 entries of every row,
    which takes longer than the LM head itself; one uniform per row and a binary search do not.
    """
    cdf = torch.softmax(logits.float() / temperature, dim=-1).cumsum(dim=-1)
    u = torch.rand(logits.size(0), 1, generator=generator, device=logits.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_max(logits.size(-1) - 1).squeeze(-1)


@torch.no_grad()
def generate_cached(
    model: GPT, prompts: torch.Tensor, max_new_tokens: int, temperature: float, eot_id: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Like `GPT.generate` at a temperature > 0 without top-k/top-p: rows that emit `eot_id` stop and are
    padded with it; the result is (batch, prompt_len + up to max_new_tokens)."""
    if prompts.size(1) + max_new_tokens > model.config.block_size:
        raise ValueError(f"{prompts.size(1)} prompt + {max_new_tokens} new tokens exceed the context "
                         f"of {model.config.block_size}")
    hidden, cache = forward_cached(model, prompts, None, 0)
    finished = torch.zeros(prompts.size(0), dtype=torch.bool, device=prompts.device)
    out = [prompts]
    for step in range(max_new_tokens):
        next_id = sample_softmax(model.lm_head(hidden[:, -1, :]), temperature, generator)
        next_id = torch.where(finished, torch.full_like(next_id, eot_id), next_id)
        finished |= next_id == eot_id
        out.append(next_id[:, None])
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        hidden, cache = forward_cached(model, next_id[:, None], cache, prompts.size(1) + step)
    return torch.cat(out, dim=1)
