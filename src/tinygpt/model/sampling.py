"""The one decoding engine: the next-token rules and one KV-cache loop that every sampler runs on.

`decode_steps` runs each new token through the model once on a `KVCache` instead of re-running the whole prefix
(for RLHF's 8-token prompts and 24-token continuations that is ~1/15 of the transformer work), and past the
context slides the window. What it draws is a `draw` rule on the last hidden states:

- RLHF's rollouts draw through an output head (tinygpt.model.heads): the plain softmax at a temperature,
  one uniform per row, so the log-probs PPO and the KL penalty use are those of the sampling distribution;
- user-facing decoding (`tinygpt generate`, the evaluate stage's samples, the served model) goes through
  the LM head with greedy, top-k and top-p (`sample_next`).

`generate` returns the batch's sequences, `stream` yields one prompt's ids as they are drawn.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch

from tinygpt.model.gpt import GPT, KVCache
from tinygpt.model.heads import FullHead

Draw = Callable[[torch.Tensor], torch.Tensor]  # last hidden states (batch, n_embd) -> next ids (batch,)


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to -inf every logit outside the top k and outside the smallest set with probability >= top_p."""
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p; the first always stays.
        drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One id per row from last-position logits (batch, vocab) for user-facing decoding; temperature 0 is
    greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def decode_steps(
    model: GPT, prompts: torch.Tensor, max_new_tokens: int, draw: Draw, eot_id: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the next ids (batch,) of every prompt (batch, len), one step at a time. Needs eval mode.

    A row that emits `eot_id` stops and is padded with it; decoding ends when every row has stopped. Only
    the last position reaches `draw`: the LM head over a whole prompt would cost more than the blocks.
    Past the context the window slides, and every position embedding under it shifts, so the cached keys
    are stale: a fresh cache is prefilled with the last block_size - 1 tokens and the new one.
    """
    if prompts.size(1) == 0:
        raise ValueError("the prompt is empty; start from [end-of-text] for an unconditional sample")
    context = model.config.block_size
    window = prompts[:, -context:]
    cache, pending = KVCache(model.config.n_layer), window  # pending: ids not yet run through the model
    finished = torch.zeros(prompts.size(0), dtype=torch.bool, device=prompts.device)
    for _ in range(max_new_tokens):
        if cache.pos + pending.size(1) > context:
            cache, pending = KVCache(model.config.n_layer), window
        next_id = draw(model.hidden_states(pending, cache)[:, -1, :])
        if eot_id is not None:
            next_id = torch.where(finished, torch.full_like(next_id, eot_id), next_id)
            finished |= next_id == eot_id
        yield next_id
        if eot_id is not None and bool(finished.all()):
            return
        pending = next_id[:, None]
        window = torch.cat([window, pending], dim=1)[:, -context:]


def draw_rule(
    model: GPT, temperature: float, top_k: int | None, top_p: float | None, generator: torch.Generator | None,
    head: FullHead | None,
) -> Draw:
    """The next-token rule: through `head` (RLHF's plain softmax, one uniform per row) when given, else
    through the LM head with greedy, top-k and top-p."""
    if head is None:
        return lambda h: sample_next(model.lm_head(h).float(), temperature, top_k, top_p, generator)
    if top_k is not None or top_p is not None or temperature <= 0:
        raise ValueError("an output head draws from the whole softmax at a temperature > 0: "
                         "no top-k, top-p or greedy decoding")
    return lambda h: head.sample(h, temperature, generator)


def generate(
    model: GPT, prompts: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
    top_p: float | None = None, eot_id: int | None = None, generator: torch.Generator | None = None,
    head: FullHead | None = None,
) -> torch.Tensor:
    """Each row of `prompts` (batch, len) extended by up to `max_new_tokens` ids (see `decode_steps`); the result
    is (batch, len + new), shorter than len + max_new_tokens when every row ended early. `head`: draw
    through an output head (see `draw_rule`)."""
    draw = draw_rule(model, temperature, top_k, top_p, generator, head)
    new = [ids[:, None] for ids in decode_steps(model, prompts, max_new_tokens, draw, eot_id)]
    return torch.cat([prompts, *new], dim=1)


def stream(
    model: GPT, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float = 1.0,
    top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
    eot_id: int | None = None,
) -> Iterator[int]:
    """One prompt's new ids, each yielded as soon as it is drawn (`tinygpt generate`); `eot_id` is yielded
    and ends the stream."""
    prompts = torch.tensor([list(prompt_ids)], dtype=torch.long, device=model.transformer.wte.weight.device)
    draw = draw_rule(model, temperature, top_k, top_p, generator, None)
    for ids in decode_steps(model, prompts, max_new_tokens, draw, eot_id):
        yield int(ids[0])
