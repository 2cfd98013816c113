"""Model FLOPs of training a GPT, per token, and model FLOPs utilisation (MFU) against a GPU's peak.

MFU (PaLM, Chowdhery et al. 2022, appendix B) is the FLOPs the model needs per second, as a fraction of
the hardware's peak. It counts the model's FLOPs, not what the kernels run: no recomputation, no optimizer,
no elementwise work, and causal attention at its full length. That makes it comparable across code and
hardware. Torch-free: the count is a function of the shape alone.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from tinygpt.model.config import GPTConfig


def non_embedding_params(config: GPTConfig) -> int:
    """Parameters outside the token and position embeddings: every block, and the final LayerNorm."""
    d = config.n_embd
    bias = 1 if config.bias else 0
    layer_norm = d * (1 + bias)

    def linear(n_in: int, n_out: int) -> int:
        return n_in * n_out + bias * n_out

    block = 2 * layer_norm + linear(d, 3 * d) + linear(d, d) + linear(d, 4 * d) + linear(4 * d, d)
    return config.n_layer * block + layer_norm


def flops_per_token(config: GPTConfig, seq_len: int | None = None, head_rows: int | None = None) -> float:
    """Training FLOPs (forward and backward) per token on windows of `seq_len` tokens (default the
    block size): 6N + 12 L H Q T, with L layers, H heads of width Q, and T = seq_len.

    N counts the weights each token is multiplied by: the non-embedding parameters plus the LM head, a
    `head_rows` x n_embd matrix (default all vocab_size rows; the compact head of train.shortlist_vocab
    has fewer). The head is the token embedding's tensor (tied), but at the output it is a matmul, while
    the token and position embeddings at the input are lookups and cost no multiplies. For a full head
    this is nanoGPT's N (every parameter but the position embedding). A weight costs 2 FLOPs per token
    forward (multiply, add) and 4 backward (the input's gradient and its own): 6N. The 12 L H Q T term
    is attention: the scores and the weighted sum of the values, 2 x 2 T H Q per layer forward, times 3
    with the backward.
    """
    seq_len = config.block_size if seq_len is None else seq_len
    head_rows = config.vocab_size if head_rows is None else head_rows
    n = non_embedding_params(config) + head_rows * config.n_embd
    return 6.0 * n + 12.0 * config.n_layer * config.n_head * config.head_dim * seq_len


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: the model's FLOP/s at `tokens_per_s`, as a fraction of `peak_flops`."""
    if peak_flops <= 0:
        raise ValueError(f"peak FLOP/s must be positive, got {peak_flops}")
    return tokens_per_s * flops_per_token / peak_flops


@dataclass(frozen=True)
class GpuPeak:
    key: str  # found as whole words in torch.cuda.get_device_name(), any case
    flops: float  # dense (no sparsity) FLOP/s
    note: str = ""


# Dense bf16 tensor-core peaks from the vendors' datasheets (halves of the "with sparsity" figures). The
# first entry whose key occurs in the device name wins, so a variant comes before its family:
# "NVIDIA H100 PCIe" must not match "H100", nor "NVIDIA L40S" match "L4".
BF16_PEAKS: tuple[GpuPeak, ...] = (
    GpuPeak("H100 PCIe", 756e12),
    GpuPeak("H100 NVL", 835e12),
    GpuPeak("H100", 989e12, "SXM"),  # the SXM part's name is "NVIDIA H100 80GB HBM3"
    GpuPeak("H200 NVL", 835e12),
    GpuPeak("H200", 989e12, "SXM"),
    GpuPeak("A100", 312e12),
    GpuPeak("A10G", 125e12, "approximate: the A10's datasheet peak; AWS does not publish the A10G's"),
    GpuPeak("L4", 121e12),
    GpuPeak("RTX 4090", 165e12, "with fp32 accumulation, as autocast's matmuls use"),
    GpuPeak("V100", 125e12, "no bf16 tensor cores: this is the fp16 peak, and bf16 runs emulated"),
)


def gpu_peak(device_name: str) -> GpuPeak | None:
    """The bf16 peak of the GPU named `device_name` (torch.cuda.get_device_name()); None if unknown."""
    for peak in BF16_PEAKS:
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(peak.key)}(?![A-Za-z0-9])", device_name, re.IGNORECASE):
            return peak
    return None
