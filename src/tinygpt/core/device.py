"""Device and numeric precision: `auto` picks CUDA, then MPS, then CPU; bf16 autocast where it helps."""
from __future__ import annotations

import contextlib

import torch

from tinygpt.core.checks import DEVICES, PRECISIONS
from tinygpt.core.errors import TinyGptError


def resolve_device(name: str = "auto") -> torch.device:
    if name not in DEVICES:
        raise TinyGptError(f"device '{name}' is unknown; allowed: {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TinyGptError("device 'cuda' was asked for but no CUDA GPU is visible; use device: auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise TinyGptError("device 'mps' was asked for but MPS is not available; use device: auto or cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX512-BF16 make bf16 matmuls several times faster than fp32 on CPU."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> str:
    """'bf16' or 'fp32'. `auto` uses bf16 on CUDA with bf16 support and on CPUs with AMX/AVX512-BF16."""
    if name not in PRECISIONS:
        raise TinyGptError(f"precision '{name}' is unknown; allowed: {', '.join(PRECISIONS)}")
    if name != "auto":
        return name
    if device.type == "cuda":
        # Native bf16 only (compute capability 8.0+): torch's default check also accepts GPUs that merely
        # emulate it (V100, T4), which have no bf16 tensor cores for autocast to gain from.
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """Mixed-precision context: matmuls in bf16, weights and the loss in fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
