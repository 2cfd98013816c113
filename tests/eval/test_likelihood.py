"""Likelihood in windows: every token scored once, sliding windows equal a token-by-token computation,
non-overlapping windows equal plain chunks, perplexity and bits per byte on exact toy cases."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinygpt.core.modes import eval_mode
from tinygpt.eval.likelihood import bits_per_byte, even_segments, split_nll, val_nll, windows
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.model.shortlist import ShortlistGPT, CompactVocabulary

CONTEXT = 16


@pytest.fixture(scope="module")
def model():
    """A small GPT with weights scaled up so its predictions depend strongly on the context."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=97, block_size=CONTEXT, n_layer=1, n_head=2, n_embd=16))
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(20.0)
    return m.eval()


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(0).integers(0, 97, size=61).astype(np.uint16)


def target_logprob(model, tokens, start, i):
    """log p(tokens[i] | tokens[start:i]) from one forward pass on exactly that context."""
    x = torch.tensor(tokens[start:i], dtype=torch.long)[None]
    with torch.no_grad():
        logits, _ = model(x)
    return float(F.log_softmax(logits[0, -1].double(), dim=-1)[int(tokens[i])])


@pytest.mark.parametrize("n,context,stride", [(61, 16, 5), (61, 16, 16), (17, 16, 8), (16, 16, 3), (2, 4, 1), (100, 7, 1)])
def test_windows_score_every_target_once_with_enough_history(n, context, stride):
    scored = []
    for w in windows(n, context, stride):
        assert 1 <= w.n_new <= w.length <= context
        first = w.start + w.length - w.n_new + 1
        scored += list(range(first, w.start + w.length + 1))
        assert first - w.start >= min(first, context - stride + 1)  # history of the least-informed target
    assert scored == list(range(1, n))


def test_stride_equal_to_context_is_plain_windows(model, tokens):
    result = split_nll(model, tokens, CONTEXT, CONTEXT, batch_size=3)
    plain, count = 0.0, 0
    ids = torch.tensor(tokens.astype(np.int64))
    for start in range(0, len(ids) - 1, CONTEXT):
        x, y = ids[start : start + CONTEXT], ids[start + 1 : start + CONTEXT + 1]
        with torch.no_grad():
            _, loss = model(x[None, : len(y)], y[None])
        plain += float(loss) * len(y)
        count += len(y)
    assert result.n_tokens == count == len(tokens) - 1
    assert result.total_nll == pytest.approx(plain, rel=1e-5)


def test_stride_one_gives_every_token_its_full_context(model, tokens):
    direct = -sum(target_logprob(model, tokens, max(0, i - CONTEXT), i) for i in range(1, len(tokens)))
    result = split_nll(model, tokens, CONTEXT, 1, batch_size=8)
    assert result.total_nll == pytest.approx(direct, rel=1e-5)


def test_sliding_window_equals_a_direct_computation(model, tokens):
    stride = 5
    # Target i > CONTEXT is scored by the first window whose end reaches it: start = stride * ceil((i - C) / s).
    starts = [0 if i <= CONTEXT else stride * math.ceil((i - CONTEXT) / stride) for i in range(1, len(tokens))]
    direct = -sum(target_logprob(model, tokens, s, i) for i, s in zip(range(1, len(tokens)), starts))
    result = split_nll(model, tokens, CONTEXT, stride, batch_size=4)
    assert result.n_tokens == len(tokens) - 1
    assert result.total_nll == pytest.approx(direct, rel=1e-5)
    plain = split_nll(model, tokens, CONTEXT, CONTEXT, batch_size=4)
    assert abs(result.total_nll - plain.total_nll) > 1.0  # the context really matters to this model


def test_batch_size_and_segments_do_not_change_the_result(model, tokens):
    one = split_nll(model, tokens, CONTEXT, 5, batch_size=1)
    many = split_nll(model, tokens, CONTEXT, 5, batch_size=64)
    assert many.total_nll == pytest.approx(one.total_nll, rel=1e-6)
    np.testing.assert_allclose(many.positions.nll, one.positions.nll, rtol=1e-5)
    segments = [(0, 20), (30, 61)]
    joint = split_nll(model, tokens, CONTEXT, 5, batch_size=4, segments=segments)
    apart = [split_nll(model, tokens[a:b], CONTEXT, 5, batch_size=4) for a, b in segments]
    assert joint.n_tokens == 19 + 30
    assert joint.total_nll == pytest.approx(sum(r.total_nll for r in apart), rel=1e-6)


def test_positions_agree_with_the_totals(model, tokens):
    result = split_nll(model, tokens, CONTEXT, 4, batch_size=4, keep_hidden=True)
    pos = result.positions
    assert len(pos.nll) == len(pos.confidence) == len(pos.correct) == result.n_tokens
    assert float(pos.nll.sum(dtype=np.float64)) == pytest.approx(result.total_nll)
    assert np.all((pos.confidence > 0) & (pos.confidence <= 1))
    # A correct top-1 token has NLL = -log(confidence); a wrong one has a larger NLL.
    np.testing.assert_allclose(pos.nll[pos.correct], -np.log(pos.confidence[pos.correct]), rtol=1e-4, atol=1e-5)
    assert np.all(pos.nll[~pos.correct] >= -np.log(pos.confidence[~pos.correct]) - 1e-5)
    assert result.hidden.shape == (result.n_tokens, 16)
    assert result.targets.tolist() == tokens[1:].astype(int).tolist()
    with torch.no_grad():
        logits = model.lm_head(result.hidden)
    assert float(F.cross_entropy(logits, result.targets, reduction="sum")) == pytest.approx(result.total_nll, rel=1e-5)


def test_uniform_model_perplexity_and_bits_per_byte():
    vocab = 64
    m = GPT(GPTConfig(vocab_size=vocab, block_size=8, n_layer=1, n_head=1, n_embd=8))
    with torch.no_grad():
        m.transformer.wte.weight.zero_()  # the tied head then gives all-zero logits: a uniform prediction
    toks = np.arange(33, dtype=np.uint16) % vocab
    result = split_nll(m, toks, 8, 3, batch_size=2)
    assert result.n_tokens == 32
    assert result.mean_nll == pytest.approx(math.log(vocab), rel=1e-6)
    assert result.perplexity == pytest.approx(vocab, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(result.mean_nll))
    # 32 tokens x 6 bits each over 100 bytes
    assert result.bits_per_byte(100) == pytest.approx(32 * 6 / 100, rel=1e-6)
    assert bits_per_byte(math.log(2) * 8, 4) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        bits_per_byte(1.0, 0)


def test_precision_bf16_stays_close_to_fp32(model, tokens):
    fp32 = split_nll(model, tokens, CONTEXT, 8, batch_size=4, precision="fp32")
    bf16 = split_nll(model, tokens, CONTEXT, 8, batch_size=4, precision="bf16")
    assert bf16.mean_nll == pytest.approx(fp32.mean_nll, rel=0.03)


def test_errors_and_mode(model, tokens):
    with pytest.raises(ValueError, match="block_size"):
        split_nll(model, tokens, CONTEXT + 1, 4, batch_size=2)
    with pytest.raises(ValueError, match="stride"):
        windows(10, 4, 5)
    with pytest.raises(ValueError, match="nothing to score"):
        split_nll(model, tokens[:1], CONTEXT, 4, batch_size=2)
    model.train()
    with eval_mode(model):
        assert not model.training
    assert model.training
    model.eval()


def test_even_segments():
    assert even_segments(1000, 0, 8) == [(0, 1000)]
    assert even_segments(1000, 1000, 8) == [(0, 1000)]
    segs = even_segments(1000, 400, 4)
    assert segs == [(0, 100), (300, 400), (600, 700), (900, 1000)]


def test_val_nll_equals_plain_chunks_through_the_compact_head():
    """The RLHF stages' fast val NLL: non-overlapping windows, a shorter last one, through the compact head
    (the model has shared embedding rows), against cross-entropy over plain chunks of the full logits."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=300, block_size=CONTEXT, n_layer=1, n_head=2, n_embd=32, dropout=0.0)
    model = ShortlistGPT(config, CompactVocabulary.of_tokens(np.arange(100), 300)).to_full().eval()  # shared rows
    tokens = np.random.default_rng(0).integers(0, 300, CONTEXT * 5 + 7)  # a shorter last window, unseen ids too
    ids = torch.from_numpy(tokens)
    with torch.no_grad():
        chunks = [ids[i : i + CONTEXT + 1] for i in range(0, len(ids) - 1, CONTEXT)]
        expected = sum(F.cross_entropy(model(c[None, :-1])[0][0], c[1:], reduction="sum").item() for c in chunks)
    assert val_nll(model, tokens, "fp32", batch_size=2) == pytest.approx(expected / (len(ids) - 1), abs=1e-5)
    assert val_nll(model, tokens, "fp32") == pytest.approx(split_nll(model, tokens, CONTEXT, CONTEXT, 4).mean_nll,
                                                          abs=1e-5)
