"""The GPT: causality, shapes, GPT-2's parameter count, initial loss, the logit bias and config errors
(generation: test_sampling.py)."""
import math

import pytest
import torch

from tinygpt.model.config import PRESETS, ConfigError, GPTConfig, preset
from tinygpt.model.gpt import GPT
from tinygpt.model.weights import load_model, save_model

TINY = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)


def tiny_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY.to_dict(), **overrides})).eval()


def test_changing_a_later_token_never_changes_earlier_logits():
    model = tiny_model()
    x = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base, _ = model(x)
        for t in (0, 5, 15):
            changed = x.clone()
            changed[:, t] = (changed[:, t] + 7) % 64
            logits, _ = model(changed)
            assert torch.equal(logits[:, :t], base[:, :t]), f"position < {t} saw token {t}"
            assert not torch.allclose(logits[:, t], base[:, t])  # the changed position itself does change


def test_shapes_and_loss_at_init():
    model = tiny_model(vocab_size=50257, n_embd=64)
    x = torch.randint(0, 50257, (3, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = torch.randint(0, 50257, (3, 16), generator=torch.Generator().manual_seed(3))
        logits, loss = model(x, y)
        assert logits.shape == (3, 16, 50257)
        assert model(x)[1] is None
        assert model.hidden_states(x).shape == (3, 16, 64)
    # Small initial weights give near-uniform predictions: loss ~ ln(vocab) = 10.825 (random targets:
    # a target equal to its input would score higher, through the tied embedding in the residual).
    assert loss.item() == pytest.approx(math.log(50257), abs=0.05)


def test_ignored_targets_do_not_count():
    model = tiny_model()
    x = torch.randint(0, 64, (1, 16), generator=torch.Generator().manual_seed(3))
    y = x.clone()
    y[:, 8:] = -1
    with torch.no_grad():
        _, masked = model(x, y)
        _, first_half = model(x[:, :8], x[:, :8])
    assert masked.item() == pytest.approx(first_half.item(), abs=1e-5)


def test_sequence_longer_than_context_is_an_error():
    with pytest.raises(ValueError, match="exceeds the context of 16"):
        tiny_model()(torch.zeros(1, 17, dtype=torch.long))


def test_gpt2_preset_has_hugging_face_gpt2_parameter_count():
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        ours = GPT(preset("gpt2"))
        theirs = GPT2LMHeadModel(GPT2Config())
    counts = ours.param_counts()
    assert counts.total == 124_439_808
    assert counts.total == sum(p.numel() for p in theirs.parameters())
    assert counts.non_embedding == 124_439_808 - 50257 * 768 - 1024 * 768
    assert ours.lm_head.weight is ours.transformer.wte.weight


def test_residual_projections_are_scaled_at_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=1000, block_size=32, n_layer=8, n_head=4, n_embd=256))
    scaled = model.transformer.h[0].mlp.c_proj.weight.std().item()
    plain = model.transformer.h[0].mlp.c_fc.weight.std().item()
    assert plain == pytest.approx(0.02, rel=0.02)
    assert scaled == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.02)
    assert torch.count_nonzero(model.transformer.h[0].attn.c_attn.bias) == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"n_embd": 30, "n_head": 4}, "n_embd = 30 is not divisible by model.n_head = 4"),
        ({"n_layer": 0}, "n_layer = 0 is invalid"),
        ({"block_size": -1}, "block_size = -1 is invalid"),
        ({"dropout": 1.0}, r"dropout = 1.0 is invalid; allowed: \[0, 1\)"),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        GPT(GPTConfig(**{**TINY.to_dict(), **overrides}))


def test_unknown_preset_and_keys():
    with pytest.raises(ConfigError, match="unknown model preset 'gpt5'"):
        preset("gpt5")
    with pytest.raises(ConfigError, match=r"unknown model config keys \['n_layers'\]"):
        GPTConfig.from_dict({"n_layers": 2})
    assert set(PRESETS) >= {"gpt2", "default"}


def test_a_logit_bias_saves_and_loads_with_the_model(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=100, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    x = torch.randint(0, 100, (2, 8))
    with torch.no_grad():
        model.add_logit_bias().copy_(torch.randn(100))
        expected = model(x)[0]
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.config.logit_bias and torch.equal(loaded.lm_head.bias, model.lm_head.bias)
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], expected)
    plain = GPT(GPTConfig(vocab_size=100, block_size=16, n_layer=1, n_head=2, n_embd=16))
    assert plain.lm_head.bias is None and not plain.config.logit_bias
