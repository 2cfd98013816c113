"""`precision: auto` on CUDA means bf16 only where the GPU computes it natively (compute capability 8.0+),
not where torch merely emulates it; explicit precisions and CPUs are unaffected."""
import types

import pytest
import torch

from tinygpt.core.device import resolve_precision

CUDA = torch.device("cuda")


@pytest.fixture
def fake_gpu(monkeypatch):
    """A visible CUDA GPU of a given compute capability that can hold bf16 tensors (by emulation below 8.0),
    seen through torch's own torch.cuda.is_bf16_supported."""
    def install(major: int) -> None:
        monkeypatch.setattr(torch.version, "hip", None)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(major=major))
        monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)
    return install


@pytest.mark.parametrize("major, expected", [(7, "fp32"), (8, "bf16"), (9, "bf16")])
def test_auto_on_cuda_is_bf16_only_where_native(fake_gpu, major, expected):
    fake_gpu(major)
    assert torch.cuda.is_bf16_supported()  # torch's default counts emulation as support
    assert resolve_precision("auto", CUDA) == expected


@pytest.mark.parametrize("name", ["fp32", "bf16"])
def test_explicit_precision_is_kept(fake_gpu, name):
    fake_gpu(7)
    assert resolve_precision(name, CUDA) == name
