"""Params of where every stage computes (the compute section of params.yaml); torch-free."""
from __future__ import annotations

from dataclasses import dataclass

from tinygpt.core.checks import DEVICES, PRECISIONS, one_of


@dataclass(frozen=True)  # frozen: a safe default argument of the functions that take it
class ComputeParams:
    """params.yaml `compute`: the device and the numeric precision of pretraining, evaluation and RLHF,
    resolved by tinygpt.core.device (`auto`: CUDA, then MPS, then CPU; bf16 autocast where it is fast)."""

    device: str = "auto"
    precision: str = "auto"

    def validate(self) -> None:
        one_of("compute.device", self.device, DEVICES)
        one_of("compute.precision", self.precision, PRECISIONS)
