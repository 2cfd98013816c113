"""Fast sampling for RLHF: decoding with the model's KV cache and one uniform draw per row.

`GPT.generate` re-runs the whole prefix for every new token, which for RLHF's many short rollouts
(8-token prompts, 24-token continuations) is ~15x the transformer work of decoding with a `KVCache`,
where each new token runs through the model's own forward once; a test checks its logits against the
full forward pass.
"""
from __future__ import annotations

from typing import Callable

import torch

from tinygpt.model.gpt import GPT, KVCache


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
    generator: torch.Generator | None = None, sample: Callable | None = None,
) -> torch.Tensor:
    """Like `GPT.generate` at a temperature > 0 without top-k/top-p: rows that emit `eot_id` stop and are
    padded with it; the result is (batch, prompt_len + up to max_new_tokens).

    `sample(hidden, temperature, generator)` draws the next ids from the last hidden states (an output
    head's `sample`, tinygpt.model.heads); by default through the model's full LM head."""
    sample = sample or (lambda h, t, g: sample_softmax(model.lm_head(h), t, g))
    if prompts.size(1) + max_new_tokens > model.config.block_size:
        raise ValueError(f"{prompts.size(1)} prompt + {max_new_tokens} new tokens exceed the context "
                         f"of {model.config.block_size}")
    cache = KVCache(model.config.n_layer)
    # The LM head reads only the last position: over the whole prompt it would cost more than the blocks.
    hidden = model.hidden_states(prompts, cache)
    finished = torch.zeros(prompts.size(0), dtype=torch.bool, device=prompts.device)
    out = [prompts]
    for step in range(max_new_tokens):
        next_id = sample(hidden[:, -1, :], temperature, generator)
        next_id = torch.where(finished, torch.full_like(next_id, eot_id), next_id)
        finished |= next_id == eot_id
        out.append(next_id[:, None])
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        hidden = model.hidden_states(next_id[:, None], cache)
    return torch.cat(out, dim=1)
