"""The compact output head gives the full head's log-probs, entropies and gradients when tokens share rows."""
import numpy as np
import pytest
import torch

from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.model.heads import CompactHead, FullHead, output_head
from tinygpt.model.shortlist import ShortlistGPT, CompactVocabulary

CONFIG = GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=32, dropout=0.0)


def model_with_shared_rows():
    """A full GPT expanded from the compact vocabulary: ids 120..299 share one embedding row."""
    torch.manual_seed(0)
    vocab = CompactVocabulary.of_tokens(np.random.default_rng(0).integers(0, 120, 4000), 300)
    return ShortlistGPT(CONFIG, vocab).to_full().eval()


def test_logprobs_and_entropy_at_a_temperature_are_those_of_the_softmax():
    model = model_with_shared_rows()
    hidden = torch.randn(2, 3, 32, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[1, 150, 7], [299, 0, 119]])
    probs = torch.softmax(model.lm_head(hidden) / 0.5, dim=-1)
    expected_logp = probs.log().gather(-1, ids[..., None]).squeeze(-1)
    expected_entropy = -(probs * probs.log()).sum(-1)
    for head in (FullHead(model), CompactHead.of(model)):
        assert torch.allclose(head.logprobs(hidden, ids, 0.5), expected_logp, atol=1e-5)
        assert torch.allclose(head.entropy(hidden, 0.5), expected_entropy, atol=1e-5)


def test_compact_head_has_one_row_per_distinct_embedding_and_the_full_heads_gradient():
    model = model_with_shared_rows()
    compact = CompactHead.of(model)
    assert len(compact.rows) == 121 and compact.vocab.log_counts.exp().sum().item() == pytest.approx(300)
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(2))
    grads = []
    for head in (FullHead(model), compact):
        model.zero_grad()
        head.logprobs(model.hidden_states(ids), ids.roll(-1, 1)).sum().backward()
        grads.append(model.transformer.h[0].attn.c_attn.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_no_compact_head_without_repeated_rows():
    torch.manual_seed(0)
    distinct = GPT(CONFIG)
    assert CompactHead.of(distinct) is None
    assert type(output_head(distinct, compact=True)) is FullHead
    assert type(output_head(model_with_shared_rows(), compact=False)) is FullHead


def test_compact_sampling_draws_from_the_full_softmax():
    model = model_with_shared_rows()
    hidden = torch.randn(1, 32, generator=torch.Generator().manual_seed(3)).expand(200_000, 32)
    probs = torch.softmax(model.lm_head(hidden[0]) / 0.7, dim=-1)
    draws = CompactHead.of(model).sample(hidden, 0.7, torch.Generator().manual_seed(4))
    freq = torch.bincount(draws, minlength=300).float() / len(draws)
    assert (freq - probs).abs().max().item() < 4e-3
    shared = freq[120:]  # one row's 180 tokens: equally likely, each drawn
    assert (shared > 0).all() and shared.std() / shared.mean() < 0.2


def biased(model, seed=6):
    """`model` with a random logit bias, one value for all of ids 120..299 (the shared row)."""
    bias = model.add_logit_bias()
    with torch.no_grad():
        bias.copy_(torch.randn(300, generator=torch.Generator().manual_seed(seed)))
        bias[120:] = bias[120]
    return model


def test_a_logit_bias_is_added_at_zero_and_the_compact_head_includes_it():
    model = model_with_shared_rows()
    hidden = torch.randn(2, 3, 32, generator=torch.Generator().manual_seed(1))
    before = FullHead(model).logprobs(hidden, torch.tensor([[1, 150, 7], [299, 0, 119]]))
    assert model.add_logit_bias().abs().sum().item() == 0 and model.config.logit_bias
    assert model.add_logit_bias() is model.lm_head.bias  # once
    ids = torch.tensor([[1, 150, 7], [299, 0, 119]])
    assert torch.equal(FullHead(model).logprobs(hidden, ids), before)
    biased(model)
    probs = torch.softmax((hidden @ model.lm_head.weight.T + model.lm_head.bias) / 0.5, dim=-1)
    expected = probs.log().gather(-1, ids[..., None]).squeeze(-1)
    assert (FullHead(model).logprobs(hidden, ids, 0.5) - before).abs().max().item() > 0.1  # the bias counts
    for head in (FullHead(model), CompactHead.of(model)):
        assert torch.allclose(head.logprobs(hidden, ids, 0.5), expected, atol=1e-5)
        assert torch.allclose(head.entropy(hidden, 0.5), -(probs * probs.log()).sum(-1), atol=1e-5)


def test_a_shared_rows_tokens_get_equal_bias_gradients_so_the_heads_keep_agreeing():
    model = biased(model_with_shared_rows())
    ids = torch.tensor([[3, 150, 200, 7, 299, 121]])  # shared-row tokens among the targets
    hidden = model.hidden_states(ids)
    CompactHead.of(model).logprobs(hidden, ids.roll(-1, 1)).sum().backward()
    grad = model.lm_head.bias.grad
    assert grad[120:].std().item() == 0 and grad[120].item() != 0
    model.zero_grad()
    FullHead(model).logprobs(model.hidden_states(ids), ids.roll(-1, 1)).sum().backward()
    # the full head's gradient differs token by token inside the row, and the compact head's is its row mean
    assert torch.allclose(grad[120], model.lm_head.bias.grad[120:].mean(), atol=1e-6)
    assert torch.allclose(grad[:120], model.lm_head.bias.grad[:120], atol=1e-6)


def test_no_compact_head_when_a_rows_tokens_have_different_biases():
    model = biased(model_with_shared_rows())
    assert CompactHead.of(model) is not None
    with torch.no_grad():
        model.lm_head.bias[200] += 1e-3
    assert CompactHead.of(model) is None and type(output_head(model, compact=True)) is FullHead


def test_a_bias_that_differs_within_a_row_only_by_rounding_keeps_the_compact_head():
    # CPU fused Adam rounds a tensor's scalar tail differently: a finetuned policy's id 50256 (alone in the
    # tail, in the shared row) ends ~1e-7 off its row-mates. The compact head must still apply, agreeing.
    model = biased(model_with_shared_rows())
    with torch.no_grad():
        model.lm_head.bias[299] += 2e-7
    head = CompactHead.of(model)
    assert head is not None
    hidden = torch.randn(2, 3, 32, generator=torch.Generator().manual_seed(2))
    ids = torch.tensor([[1, 150, 299], [299, 0, 119]])
    assert torch.allclose(head.logprobs(hidden, ids), FullHead(model).logprobs(hidden, ids), atol=1e-5)
    assert torch.allclose(head.entropy(hidden), FullHead(model).entropy(hidden), atol=1e-5)
