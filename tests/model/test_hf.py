"""Hugging Face interop: weights moved each way give the same logits, losses and greedy tokens; the
export loads in `transformers.pipeline` offline; pretrained loading reports what is missing."""
import json
import os

import pytest
import torch
from transformers import (GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast,
                          pipeline)

from tinygpt.data.tokenizer import EOT_ID, N_VOCAB, gpt2_encoding
from tinygpt.model import hf
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.model.sampling import generate

VOCAB = 500


def tiny_hf(vocab_size: int = VOCAB, seed: int = 0) -> GPT2LMHeadModel:
    """A random GPT-2 (2 layers, 2 heads, 32 wide) with every bias and LayerNorm perturbed, so a bias
    or a transpose dropped anywhere changes the logits."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=32, n_embd=32, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def random_tokens(batch: int, seq: int, vocab: int = VOCAB, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_hf_to_ours_same_logits_and_loss():
    hf_model = tiny_hf()
    ours = hf.gpt_from_hf(hf_model)
    x = random_tokens(3, 32)
    with torch.no_grad():
        hf_out = hf_model(input_ids=x, labels=x)  # HF shifts the labels inside
        _, loss = ours(x[:, :-1], x[:, 1:])
        full_logits, _ = ours(x)
    assert (full_logits - hf_out.logits).abs().max().item() < 1e-5
    assert abs(loss.item() - hf_out.loss.item()) < 1e-6
    assert loss.item() > 1.0  # a random model: far from a trivial zero loss


def test_ours_to_hf_same_logits_and_loss():
    torch.manual_seed(3)
    ours = GPT(GPTConfig(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()
    hf_model = hf.hf_from_gpt(ours)
    x = random_tokens(2, 32, seed=4)
    with torch.no_grad():
        logits, loss = ours(x[:, :-1], x[:, 1:])
        hf_out = hf_model(input_ids=x, labels=x)
    assert (logits - hf_out.logits[:, :-1]).abs().max().item() < 1e-5
    assert abs(loss.item() - hf_out.loss.item()) < 1e-6


def test_round_trip_is_exact_and_lm_head_stays_tied():
    hf_model = tiny_hf()
    back = hf.hf_from_gpt(hf.gpt_from_hf(hf_model))
    for key, value in hf_model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    assert back.lm_head.weight.data_ptr() == back.transformer.wte.weight.data_ptr()


def test_conv1d_weights_are_transposed_and_qkv_order_kept():
    hf_model = tiny_hf()
    ours = hf.gpt_from_hf(hf_model)
    conv = hf_model.transformer.h[1].attn.c_attn.weight  # (in, 3 * out): q | k | v columns
    linear = ours.transformer.h[1].attn.c_attn.weight  # (3 * out, in): q | k | v rows
    assert linear.shape == (96, 32) and conv.shape == (32, 96)
    for part in range(3):  # q, k, v land in the same slice on both sides
        assert torch.equal(linear[part * 32 : (part + 1) * 32], conv[:, part * 32 : (part + 1) * 32].t())


def test_param_counts_match():
    hf_model = tiny_hf()
    ours = hf.gpt_from_hf(hf_model)
    assert ours.param_counts().total == hf_model.num_parameters() == 42_496  # 500*32 + 32*32 + 2 * 12_704 + 64
    gpt2_shape = hf.config_to_hf(GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768))
    assert GPT2LMHeadModel(gpt2_shape).num_parameters() == 124_439_808  # HF's own count for gpt2


def test_greedy_generation_same_tokens():
    hf_model = tiny_hf()
    ours = hf.gpt_from_hf(hf_model)
    prompt = random_tokens(2, 5, seed=7)
    ours_ids = generate(ours, prompt, max_new_tokens=20, temperature=0)
    hf_ids = hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20,
                               min_new_tokens=20, do_sample=False, pad_token_id=0)
    assert ours_ids.shape == (2, 25)
    assert torch.equal(ours_ids, hf_ids)


def test_config_round_trip_and_refusals():
    config = GPTConfig(vocab_size=50304, block_size=64, n_layer=3, n_head=4, n_embd=64, dropout=0.1)
    hf_config = hf.config_to_hf(config)
    assert (hf_config.n_positions, hf_config.eos_token_id, hf_config.resid_pdrop) == (64, EOT_ID, 0.1)
    assert hf.config_from_hf(hf_config) == config
    for option, value in [("activation_function", "relu"), ("n_inner", 100), ("tie_word_embeddings", False)]:
        bad = hf.config_to_hf(config)
        setattr(bad, option, value)
        with pytest.raises(hf.ConversionError, match="cannot convert"):
            hf.config_from_hf(bad)
    mixed = hf.config_to_hf(config)
    mixed.attn_pdrop = 0.2
    with pytest.raises(hf.ConversionError, match="dropout"):
        hf.config_from_hf(mixed)
    assert hf.config_from_hf(mixed, dropout=0.0).dropout == 0.0


def test_bias_free_model_exports_with_zero_biases():
    torch.manual_seed(5)
    ours = GPT(GPTConfig(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=2, n_embd=32, bias=False)).eval()
    hf_model = hf.hf_from_gpt(ours)
    biases = [v for k, v in hf_model.state_dict().items() if k.endswith(".bias")]
    assert len(biases) == 2 * 6 + 1 and all(not b.any() for b in biases)
    x = random_tokens(2, 16, seed=6)
    with torch.no_grad():
        assert (ours(x)[0] - hf_model(input_ids=x).logits).abs().max().item() < 1e-5
    back = hf.gpt_from_hf(hf_model, bias=False)
    assert back.param_counts().total == ours.param_counts().total
    with pytest.raises(hf.ConversionError, match="non-zero biases"):
        hf.gpt_from_hf(tiny_hf(), bias=False)


def test_export_runs_in_pipeline_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(8)
    ours = GPT(GPTConfig(vocab_size=N_VOCAB, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    out = hf.export_hf_dir(ours, tmp_path / "hf")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json"} <= names
    assert json.loads((out / "config.json").read_text())["n_positions"] == 32
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0700
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask

    tokenizer = GPT2TokenizerFast.from_pretrained(str(out))
    text = "ROMEO: But soft, what light through yonder window breaks?"
    assert tokenizer(text)["input_ids"] == gpt2_encoding().encode_ordinary(text)

    generator = pipeline("text-generation", model=str(out))
    prompt_ids = tokenizer("To be or not")["input_ids"]
    expected = generate(ours, torch.tensor([prompt_ids]), max_new_tokens=6, temperature=0)[0].tolist()
    text_out = generator("To be or not", max_new_tokens=6, min_new_tokens=6, do_sample=False)[0]["generated_text"]
    assert text_out == tokenizer.decode(expected)
    assert len(text_out) > len("To be or not")


def test_export_is_atomic(tmp_path, monkeypatch):
    ours = GPT(GPTConfig(vocab_size=N_VOCAB, block_size=16, n_layer=1, n_head=1, n_embd=8))
    out = hf.export_hf_dir(ours, tmp_path / "hf")
    before = (out / "model.safetensors").read_bytes()

    def broken_tokenizer(out_dir, model_max_length):
        raise OSError("disk full")

    monkeypatch.setattr(hf, "write_tokenizer", broken_tokenizer)
    with pytest.raises(OSError, match="disk full"):
        hf.export_hf_dir(GPT(ours.config), out)
    assert (out / "model.safetensors").read_bytes() == before  # the old export is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temp dir left behind

    small = GPT(GPTConfig(vocab_size=VOCAB, block_size=16, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(hf.ConversionError, match="vocab_size"):
        hf.export_hf_dir(small, tmp_path / "small")


def test_load_pretrained_from_local_dir(tmp_path):
    hf_model = tiny_hf()
    hf_model.save_pretrained(str(tmp_path / "gpt2-tiny"))
    loaded = hf.load_pretrained(str(tmp_path / "gpt2-tiny"))
    assert isinstance(loaded, GPT2LMHeadModel) and not loaded.training
    for key, value in hf_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_load_pretrained_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hf.PretrainedUnavailable) as err:
        hf.load_pretrained("tinygpt-tests/no-such-model")
    assert "HF_HUB_OFFLINE" in err.value.reason
    assert "compare.pretrained" in str(err.value)  # the message says how to provide it
    with pytest.raises(hf.PretrainedUnavailable, match="does not exist"):
        hf.load_pretrained(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(hf.PretrainedUnavailable, match="OSError"):
        hf.load_pretrained(str(tmp_path / "empty"))


def test_load_pretrained_by_hub_id_rehashes_the_cache(tmp_path, monkeypatch):
    """A hub id served from the Hugging Face cache (offline) loads; after one byte of its weights blob
    changes, the load is refused with HubCacheCorrupt instead of running on damaged weights."""
    import huggingface_hub.constants
    from support import fake_hub_repo

    from tinygpt.core.hub_integrity import HubCacheCorrupt

    saved = tmp_path / "saved"
    tiny_hf().save_pretrained(str(saved))
    cache = tmp_path / "hub"
    snapshot = fake_hub_repo(cache, "tinygpt-tests/tiny", {f.name: f.read_bytes() for f in saved.iterdir()})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # read at call time
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    loaded = hf.load_pretrained("tinygpt-tests/tiny")
    assert torch.equal(loaded.lm_head.weight, tiny_hf().lm_head.weight)

    blob = (snapshot / "model.safetensors").resolve()
    content = bytearray(blob.read_bytes())
    content[-1] ^= 1  # in the last tensor's data: still a loadable safetensors file
    blob.write_bytes(bytes(content))
    with pytest.raises(HubCacheCorrupt, match="model.safetensors .*delete .*models--tinygpt-tests--tiny"):
        hf.load_pretrained("tinygpt-tests/tiny")


def test_a_model_with_a_logit_bias_does_not_export():
    ours = GPT(GPTConfig(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()
    ours.add_logit_bias()
    with pytest.raises(hf.ConversionError, match="logit bias.*dpo.logit_bias_lr"):
        hf.hf_from_gpt(ours)
