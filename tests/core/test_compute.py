"""params.yaml `compute`: a bad device or precision names its key, and every choice it accepts is one
tinygpt.core.device resolves."""
import pytest
import torch

from tinygpt.core.compute import ComputeParams
from tinygpt.core.device import resolve_device, resolve_precision
from tinygpt.core.errors import ParamsError
from tinygpt.pipeline.params import build_section


@pytest.mark.parametrize("values, key", [({"device": "tpu"}, r"compute\.device = 'tpu'"),
                                         ({"precision": "fp16"}, r"compute\.precision = 'fp16'")])
def test_a_bad_choice_names_the_key(values, key):
    with pytest.raises(ParamsError, match=key + r" is invalid; allowed: one of auto, "):
        build_section("compute", ComputeParams, values)


def test_the_accepted_choices_resolve():
    assert build_section("compute", ComputeParams, None) == ComputeParams("auto", "auto")
    assert resolve_device(ComputeParams("cpu").device) == torch.device("cpu")
    cpu = torch.device("cpu")
    assert [resolve_precision(name, cpu) for name in ("fp32", "bf16")] == ["fp32", "bf16"]
    assert resolve_precision(ComputeParams().precision, cpu) in ("fp32", "bf16")
