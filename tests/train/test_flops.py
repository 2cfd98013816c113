"""Model FLOPs per token against hand counts, the GPU peak table's lookup, and MFU's arithmetic."""
import pytest

from tinygpt.model.config import GPTConfig, preset
from tinygpt.model.gpt import GPT
from tinygpt.train.flops import flops_per_token, gpu_peak, mfu, non_embedding_params

# 1 layer, 2 heads of width 2, 4 wide, a 10-token vocabulary, a 4-token context.
TINY = GPTConfig(vocab_size=10, block_size=4, n_layer=1, n_head=2, n_embd=4)


def test_non_embedding_params_by_hand():
    # Per block: two LayerNorms (4 gains + 4 biases each) 16, c_attn 4x12+12 = 60, attn c_proj 4x4+4 = 20,
    # c_fc 4x16+16 = 80, mlp c_proj 16x4+4 = 68: 244; the final LayerNorm 8.
    assert non_embedding_params(TINY) == 244 + 8
    # Without biases: LayerNorms 4 each, the four matrices 48 + 16 + 64 + 64; the final LayerNorm 4.
    assert non_embedding_params(GPTConfig(vocab_size=10, block_size=4, n_layer=1, n_head=2, n_embd=4,
                                          bias=False)) == 8 + 192 + 4


@pytest.mark.parametrize("bias", [True, False])
def test_non_embedding_params_match_the_models_tensors(bias):
    config = GPTConfig(vocab_size=50, block_size=8, n_layer=3, n_head=2, n_embd=16, bias=bias)
    assert non_embedding_params(config) == GPT(config).param_counts().non_embedding


def test_gpt2_small_counts():
    gpt2 = preset("gpt2")
    # Hugging Face's gpt2 has 124,439,808 parameters: less the 50257 x 768 token and 1024 x 768
    # position embeddings, 85,056,000.
    assert non_embedding_params(gpt2) == 124_439_808 - 50257 * 768 - 1024 * 768 == 85_056_000
    # 6 x (85,056,000 + 50257 x 768 for the LM head) + 12 x 12 layers x 768 x 1024 tokens
    assert flops_per_token(gpt2) == 6 * 123_653_376 + 113_246_208 == 855_166_464


def test_flops_per_token_by_hand():
    # N = 252 + the 10 x 4 head = 292; 6N = 1752; attention 12 x 1 layer x 2 heads x 2 wide x 4 tokens = 192.
    assert flops_per_token(TINY) == 1752 + 192
    # A 3-token window and a 5-row compact head: 6 x (252 + 20) + 12 x 1 x 2 x 2 x 3.
    assert flops_per_token(TINY, seq_len=3, head_rows=5) == 6 * 272 + 144


@pytest.mark.parametrize("name, flops", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A100-PCIE-40GB", 312e12), ("NVIDIA L4", 121e12),
    ("NVIDIA A10G", 125e12), ("NVIDIA GeForce RTX 4090", 165e12), ("Tesla V100-SXM2-16GB", 125e12),
])
def test_peak_of_known_gpus(name, flops):
    assert gpu_peak(name).flops == flops


def test_v100_peak_says_it_is_fp16():
    assert "fp16" in gpu_peak("Tesla V100-PCIE-32GB").note


@pytest.mark.parametrize("name", ["NVIDIA L40S", "NVIDIA A10", "NVIDIA GeForce RTX 3090", "cpu", ""])
def test_unknown_gpus_have_no_peak(name):
    # Whole words only: L40S is not an L4, an A10 neither an A10G nor an A100.
    assert gpu_peak(name) is None


def test_mfu_arithmetic():
    # 1,000 tokens/s x 2 GFLOP per token = 2 TFLOP/s, half of a 4 TFLOP/s peak.
    assert mfu(1000, 2e9, 4e12) == pytest.approx(0.5)
    assert mfu(50_000, flops_per_token(preset("gpt2")), 989e12) == pytest.approx(0.043234, abs=1e-6)
    with pytest.raises(ValueError):
        mfu(1000, 2e9, 0)
