"""Fast sampling: batched decoding with the model's KV cache and one uniform draw per row (RLHF's
rollouts), and one continuation streamed token by token (`tinygpt generate`).

`GPT.generate` re-runs the whole prefix for every new token, which for RLHF's many short rollouts
(8-token prompts, 24-token continuations) is ~15x the transformer work of decoding with a `KVCache`,
where each new token runs through the model's own forward once; a test checks its logits against the
full forward pass.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch

from tinygpt.model.gpt import GPT, KVCache, sample_next


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


@torch.no_grad()
def stream_tokens(
    model: GPT, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float = 1.0,
    top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
    eot_id: int | None = None,
) -> Iterator[int]:
    """Yield the ids `GPT.generate` would append to one prompt (the same draws for the same generator),
    each as soon as it is sampled; `eot_id` is yielded and ends the stream. Needs eval mode.

    Within the context each new token runs through the model once on the KV cache. Past it the window
    slides as `GPT.generate` crops, and every position embedding under the window shifts, so the cached
    keys are stale: a fresh cache is prefilled with the last block_size - 1 tokens and the new one.
    """
    if len(prompt_ids) == 0:
        raise ValueError("the prompt is empty; start from [end-of-text] for an unconditional sample")
    context, device = model.config.block_size, model.transformer.wte.weight.device
    window = [int(i) for i in prompt_ids][-context:]
    cache, pending = KVCache(model.config.n_layer), window  # pending: ids not yet run through the model
    for _ in range(max_new_tokens):
        if cache.pos + len(pending) > context:
            cache, pending = KVCache(model.config.n_layer), window
        hidden = model.hidden_states(torch.tensor([pending], device=device), cache)
        logits = model.lm_head(hidden[:, -1, :])
        next_id = int(sample_next(logits.float(), temperature, top_k, top_p, generator))
        yield next_id
        if next_id == eot_id:
            return
        window = (window + [next_id])[-context:]
        pending = [next_id]
