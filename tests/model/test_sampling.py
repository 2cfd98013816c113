"""The decoding engine: the KV cache gives the full forward's logits, the next-token rules, and batched
(RLHF's head draws, user decoding) and streamed (`tinygpt generate`) decoding, which draw exactly what a
loop re-running the whole context through the full forward draws, past the context and end-of-text too."""
import math

import pytest
import torch

from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT, KVCache
from tinygpt.model.heads import FullHead, sample_softmax
from tinygpt.model.sampling import filter_logits, generate, sample_next, stream

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_gpt(vocab: int = 64) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, block_size=24, n_layer=2, n_head=2, n_embd=16)).eval()


def context_16_gpt(seed: int = 3, n_embd: int = 16) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=n_embd)).eval()


@torch.no_grad()
def reference(model: GPT, idx: torch.Tensor, max_new_tokens: int, draw, eot_id: int | None = None) -> torch.Tensor:
    """The engine's independent reference: each step re-runs the last block_size tokens through the full
    forward, no cache; `draw(hidden_last)` is the rule, as in the engine."""
    finished = torch.zeros(idx.size(0), dtype=torch.bool)
    for _ in range(max_new_tokens):
        next_id = draw(model.hidden_states(idx[:, -model.config.block_size :])[:, -1, :])
        if eot_id is not None:
            next_id = torch.where(finished, torch.full_like(next_id, eot_id), next_id)
            finished |= next_id == eot_id
        idx = torch.cat([idx, next_id[:, None]], dim=1)
        if eot_id is not None and bool(finished.all()):
            break
    return idx


def user_draw(model: GPT, generator: torch.Generator | None, temperature: float = 1.0, top_k=None, top_p=None):
    """The user-facing rule over the full forward's logits (what GPT.generate drew)."""
    return lambda h: sample_next(model.lm_head(h).float(), temperature, top_k, top_p, generator)


def test_cached_hidden_states_equal_the_full_forward():
    model = tiny_gpt()
    seq = torch.randint(0, 64, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model.hidden_states(seq)
        cache = KVCache(model.config.n_layer)
        parts = [model.hidden_states(seq[:, :7], cache)]
        for t in range(7, 20):
            parts.append(model.hidden_states(seq[:, t : t + 1], cache))
    assert cache.pos == 20 and cache.keys[1].shape == (3, 2, 20, 8)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_several_new_tokens_on_a_cache_give_the_full_forward_logits():
    model = tiny_gpt()
    seq = torch.randint(0, 64, (3, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full, _ = model(seq)
        cache = KVCache(model.config.n_layer)
        # chunks of 5, 1, 7, 11: query i of a chunk must see the cache and the chunk's tokens <= i only
        parts = [model(seq[:, a:b], cache=cache)[0] for a, b in ((0, 5), (5, 6), (6, 13), (13, 24))]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_a_cache_beyond_the_context_is_an_error():
    model = tiny_gpt()
    cache = KVCache(model.config.n_layer)
    with torch.no_grad():
        model(torch.zeros(1, 20, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="20 cached \\+ 5 new tokens exceed the context of 24"):
            model(torch.zeros(1, 5, dtype=torch.long), cache=cache)
        model(torch.zeros(1, 4, dtype=torch.long), cache=cache)  # exactly the context is fine
    assert cache.pos == 24


def test_a_cache_with_dropout_in_training_mode_is_an_error():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=24, n_layer=2, n_head=2, n_embd=16, dropout=0.1))
    with pytest.raises(ValueError, match="needs eval mode"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=KVCache(2))


def test_sample_softmax_draws_from_the_tempered_softmax():
    logits = torch.tensor([[0.0, math.log(3.0), -1e9]]).repeat(20000, 1)
    ids = sample_softmax(logits, 1.0, torch.Generator().manual_seed(0))
    assert set(ids.tolist()) == {0, 1}
    assert (ids == 1).float().mean().item() == pytest.approx(0.75, abs=0.01)
    ids = sample_softmax(logits, 2.0, torch.Generator().manual_seed(0))  # p ∝ [1, sqrt 3]
    assert (ids == 1).float().mean().item() == pytest.approx(math.sqrt(3) / (1 + math.sqrt(3)), abs=0.01)


def test_top_k_and_top_p_filter_exactly():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    # top_p 0.7: 0.5 < 0.7, so the second token is needed; 0.5 + 0.3 >= 0.7, so nothing after it.
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.5)).tolist() == [[False, True, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.81)).tolist() == [[False, False, False, True]]
    assert not torch.isinf(filter_logits(logits, top_k=None, top_p=1.0)).any()


def test_sampling_never_leaves_the_filtered_set():
    torch.manual_seed(0)
    logits = torch.randn(4, 64)
    generator = torch.Generator().manual_seed(0)
    allowed_k = torch.topk(logits, 5).indices
    for _ in range(200):
        ids = sample_next(logits, 1.5, top_k=5, top_p=None, generator=generator)
        assert all(ids[r] in allowed_k[r] for r in range(4))
    probs = torch.softmax(logits, dim=-1)
    kept = ~torch.isinf(filter_logits(logits, top_p=0.6))
    counts = torch.zeros(4, 64)
    for _ in range(300):
        ids = sample_next(logits, 1.0, top_k=None, top_p=0.6, generator=generator)
        counts[torch.arange(4), ids] += 1
    assert counts[~kept].sum() == 0
    assert (probs * kept).sum(-1).min() >= 0.6  # the kept set does carry top_p of the mass


def test_greedy_is_deterministic_and_top_k_1_is_greedy():
    model = context_16_gpt(seed=0, n_embd=32)
    prompt = torch.tensor([[1, 2, 3]])
    a = generate(model, prompt, 10, temperature=0.0)
    b = generate(model, prompt, 10, temperature=0.0)
    c = generate(model, prompt, 10, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(5))
    assert a.shape == (1, 13) and torch.equal(a, b) and torch.equal(a, c)
    assert torch.equal(a[:, :3], prompt)


def test_seeded_sampling_is_reproducible():
    model = context_16_gpt(seed=0, n_embd=32)
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    runs = [generate(model, prompt, 12, temperature=1.0, generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_generation_stops_at_end_of_text():
    model = context_16_gpt(seed=0, n_embd=32)
    eot = 63
    with torch.no_grad():  # every position's hidden state is v, and v points at the eot embedding
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(torch.randn(32))
        model.transformer.wte.weight[eot] = 10 * model.transformer.ln_f.bias
    out = generate(model, torch.tensor([[1, 2]]), 10, temperature=1.0, eot_id=eot,
                   generator=torch.Generator().manual_seed(0))
    assert out.tolist() == [[1, 2, eot]]
    assert generate(model, torch.tensor([[1, 2]]), 4, temperature=0.0).tolist() == [[1, 2] + [eot] * 4]
    # through an output head too (RLHF's rule): every row stops, and the loop with it
    out = generate(model, torch.tensor([[1, 2]] * 4), 10, eot_id=eot, generator=torch.Generator().manual_seed(0),
                   head=FullHead(model))
    assert out[:, 2:].tolist() == [[eot]] * 4


def test_generation_crops_the_context_to_the_block_size():
    model = context_16_gpt(seed=0, n_embd=32)
    long_prompt = torch.randint(0, 64, (1, 40), generator=torch.Generator().manual_seed(4))
    out = generate(model, long_prompt, 5, temperature=0.0)
    cropped = generate(model, long_prompt[:, -16:], 5, temperature=0.0)
    assert out.shape == (1, 45)
    assert torch.equal(out[:, 40:], cropped[:, 16:])


@pytest.mark.parametrize("prompt_len", [2, 20])  # 20 + 12 new tokens: past the context of 24, the window slides
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_head_draws_are_the_full_forward_loops_and_pad_rows_after_end_of_text(prompt_len, temperature):
    model = tiny_gpt()
    eot = 5
    with torch.no_grad():
        model.lm_head.weight[eot] *= 8  # end-of-text likely enough that rows end at different steps
    prompts = torch.randint(0, 64, (50, prompt_len), generator=torch.Generator().manual_seed(1))
    head = FullHead(model)
    out = generate(model, prompts, 12, temperature, eot_id=eot, generator=torch.Generator().manual_seed(0), head=head)
    loop_generator = torch.Generator().manual_seed(0)
    expected = reference(model, prompts, 12, lambda h: head.sample(h, temperature, loop_generator), eot)
    assert torch.equal(out, expected)
    assert out.shape[1] <= prompt_len + 12 and torch.equal(out[:, :prompt_len], prompts)
    rows = out[:, prompt_len:].tolist()
    assert len({row.index(eot) if eot in row else len(row) for row in rows}) > 2  # rows end at different steps
    for row in rows:
        if eot in row:
            assert set(row[row.index(eot) :]) == {eot}


def test_a_head_draws_from_the_whole_softmax_only():
    model = tiny_gpt()
    for decoding in (dict(temperature=0.0), dict(top_k=5), dict(top_p=0.9)):
        with pytest.raises(ValueError, match="no top-k, top-p or greedy"):
            generate(model, torch.zeros(1, 2, dtype=torch.long), 3, head=FullHead(model), **decoding)


@pytest.mark.parametrize("decoding", [dict(temperature=0.0), dict(temperature=0.9, top_k=10, top_p=0.9),
                                      dict(temperature=1.3)])
def test_batched_decoding_is_the_full_forward_loops_past_the_context_and_end_of_text(decoding):
    model = context_16_gpt()
    prompts = torch.randint(0, 64, (6, 5), generator=torch.Generator().manual_seed(4))
    out = generate(model, prompts, 30, eot_id=7, generator=torch.Generator().manual_seed(5), **decoding)
    expected = reference(model, prompts, 30, user_draw(model, torch.Generator().manual_seed(5), **decoding), 7)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("prompt_len", [5, 20])  # 20: a prompt longer than the context is cropped
@pytest.mark.parametrize("decoding", [dict(temperature=0.0), dict(temperature=0.9, top_k=10, top_p=0.9),
                                      dict(temperature=1.3)])
def test_stream_gives_the_full_forward_loops_ids_past_the_context(prompt_len, decoding):
    model = context_16_gpt()
    prompt = torch.randint(0, 64, (1, prompt_len), generator=torch.Generator().manual_seed(4))
    expected = reference(model, prompt, 40, user_draw(model, torch.Generator().manual_seed(5), **decoding))
    streamed = list(stream(model, prompt[0].tolist(), 40, generator=torch.Generator().manual_seed(5), **decoding))
    assert streamed == expected[0, prompt_len:].tolist()


def test_stream_runs_one_token_per_step_until_the_context_is_full(monkeypatch):
    model = context_16_gpt()
    widths = []
    hidden_states = model.hidden_states
    monkeypatch.setattr(model, "hidden_states", lambda idx, cache=None: widths.append(idx.size(1)) or
                        hidden_states(idx, cache))
    assert len(list(stream(model, list(range(5)), 40, temperature=0.0))) == 40
    # The prompt once, one new token per step up to 16 positions, then the sliding 16-token window.
    assert widths == [5] + [1] * 11 + [16] * 28


def test_stream_ends_at_end_of_text_as_the_full_forward_loop_does():
    model = context_16_gpt()
    eot = 5
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied to wte: every next-token distribution is uniform over 64
    prompt = torch.zeros(1, 2, dtype=torch.long)
    expected = reference(model, prompt, 200, user_draw(model, torch.Generator().manual_seed(0)), eot)[0, 2:].tolist()
    streamed = list(stream(model, [0, 0], 200, eot_id=eot, generator=torch.Generator().manual_seed(0)))
    assert streamed == expected and streamed[-1] == eot and streamed.count(eot) == 1 and len(streamed) < 200
    with pytest.raises(ValueError, match="the prompt is empty"):
        next(stream(model, [], 5))
