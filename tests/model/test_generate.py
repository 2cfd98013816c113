"""Cached decoding: the KV cache gives the full forward's logits, batched sampling (RLHF) and the streamed
sampling of `tinygpt generate`, which draws exactly what `GPT.generate` draws."""
import math

import pytest
import torch

from tinygpt.model.config import GPTConfig
from tinygpt.model.generate import generate_cached, sample_softmax, stream_tokens
from tinygpt.model.gpt import GPT, KVCache

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_gpt(vocab: int = 64) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, block_size=24, n_layer=2, n_head=2, n_embd=16)).eval()


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


def test_generate_cached_pads_rows_after_end_of_text():
    model = tiny_gpt()
    eot = 5
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied to wte: every next-token distribution is uniform over 64
    prompts = torch.zeros(50, 2, dtype=torch.long)
    out = generate_cached(model, prompts, 12, 1.0, eot, torch.Generator().manual_seed(0))
    assert out.shape[1] <= 14 and torch.equal(out[:, :2], prompts)
    for row in out[:, 2:].tolist():
        if eot in row:
            assert set(row[row.index(eot) :]) == {eot}
    with pytest.raises(ValueError, match="exceed the context of 24"):
        generate_cached(model, torch.zeros(1, 20, dtype=torch.long), 5, 1.0, eot)


def test_generate_cached_stops_once_every_row_has_ended():
    model = tiny_gpt()
    eot = 5
    with torch.no_grad():  # a constant final hidden state that points at the end-of-text embedding
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[eot] = 10.0
    out = generate_cached(model, torch.zeros(4, 3, dtype=torch.long), 10, 1.0, eot)
    assert out[:, 3:].tolist() == [[eot]] * 4


def context_16_gpt() -> GPT:
    torch.manual_seed(3)
    return GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()


@pytest.mark.parametrize("prompt_len", [5, 20])  # 20: a prompt longer than the context is cropped
@pytest.mark.parametrize("decoding", [dict(temperature=0.0), dict(temperature=0.9, top_k=10, top_p=0.9),
                                      dict(temperature=1.3)])
def test_stream_tokens_gives_generates_ids_past_the_context(prompt_len, decoding):
    model = context_16_gpt()
    prompt = torch.randint(0, 64, (1, prompt_len), generator=torch.Generator().manual_seed(4))
    reference = model.generate(prompt, 40, generator=torch.Generator().manual_seed(5), **decoding)
    streamed = list(stream_tokens(model, prompt[0].tolist(), 40, generator=torch.Generator().manual_seed(5),
                                  **decoding))
    assert streamed == reference[0, prompt_len:].tolist()


def test_stream_tokens_runs_one_token_per_step_until_the_context_is_full(monkeypatch):
    model = context_16_gpt()
    widths = []
    hidden_states = model.hidden_states
    monkeypatch.setattr(model, "hidden_states", lambda idx, cache=None: widths.append(idx.size(1)) or
                        hidden_states(idx, cache))
    assert len(list(stream_tokens(model, list(range(5)), 40, temperature=0.0))) == 40
    # The prompt once, one new token per step up to 16 positions, then the sliding 16-token window.
    assert widths == [5] + [1] * 11 + [16] * 28


def test_stream_tokens_ends_at_end_of_text_as_generate_does():
    model = context_16_gpt()
    eot = 5
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied to wte: every next-token distribution is uniform over 64
    reference = model.generate(torch.zeros(1, 2, dtype=torch.long), 200, eot_id=eot,
                               generator=torch.Generator().manual_seed(0))[0, 2:].tolist()
    streamed = list(stream_tokens(model, [0, 0], 200, eot_id=eot, generator=torch.Generator().manual_seed(0)))
    assert streamed == reference and streamed[-1] == eot and streamed.count(eot) == 1 and len(streamed) < 200
