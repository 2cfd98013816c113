"""The optimizer and learning-rate schedule of pretraining: AdamW with weight decay on matrices only, or
Muon for the blocks' matrices with AdamW for the rest; linear warmup then cosine decay to a floor."""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.optim._muon as torch_muon

from tinygpt.train.config import TrainParams


def is_hidden_matrix(name: str, param: torch.Tensor) -> bool:
    """A 2-D weight inside a transformer block (attention and MLP projections). Muon's orthogonalised
    step suits maps between hidden states; embeddings (the tied LM head too) are lookup tables, and
    biases and LayerNorm gains are vectors, so those stay with AdamW."""
    return param.dim() == 2 and ".h." in f".{name}"


def param_groups(named: list[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """Decay every parameter with >= 2 dimensions (Linear weights, embeddings); not biases or LayerNorm
    gains, whose scale is their whole job. The tied wte/lm_head weight appears once."""
    return [
        {"params": [p for _, p in named if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0},
    ]


def trainable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def build_adamw(named: list[tuple[str, torch.nn.Parameter]], train_params: TrainParams,
                device: torch.device) -> torch.optim.AdamW:
    # The fused kernel does the whole update in one pass over each tensor; on CPU it is about a quarter
    # faster per step than the default multi-tensor version and gives the same results run to run.
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(
        param_groups(named, train_params.weight_decay), lr=train_params.learning_rate,
        betas=(train_params.beta1, train_params.beta2), fused=fused,
    )


class SteppedAsOne:
    """Several named optimizers, or their schedules, that step, save and load as one object (the loop and
    the checkpoint see a single optimizer and a single schedule)."""

    def __init__(self, parts: dict):
        self.parts = parts

    def step(self) -> None:
        for part in self.parts.values():
            part.step()

    def state_dict(self) -> dict:
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, part in self.parts.items():
            part.load_state_dict(state[name])


class MuonWithAdamW(SteppedAsOne):
    """Muon on the blocks' matrices and AdamW on everything else, as one optimizer. `param_groups` lists
    both optimizers' groups (the same dicts), so reading a group's lr sees what the schedule set."""

    def __init__(self, muon: torch.optim.Muon, adamw: torch.optim.AdamW):
        super().__init__({"muon": muon, "adamw": adamw})

    @property
    def param_groups(self) -> list[dict]:
        return [group for part in self.parts.values() for group in part.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts.values():
            part.zero_grad(set_to_none=set_to_none)


def orthogonalise_fp32(update: torch.Tensor, ns_coefficients: tuple[float, float, float], ns_steps: int,
                       eps: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Muon's quintic Newton-Schulz iteration (the same coefficients and steps as torch's) in fp32
    (or `dtype`). It drives the singular values of the update towards 1 using matmuls only, on the wide
    orientation (rows <= columns) so the Gram matrix is the small one."""
    a, b, c = ns_coefficients
    tall = update.size(0) > update.size(1)
    x = update.to(dtype).T if tall else update.to(dtype)
    x = x / x.norm().clamp(min=eps)  # spectral norm <= Frobenius norm <= 1: inside the iteration's basin
    for _ in range(ns_steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(update.dtype)


@contextmanager
def newton_schulz_in_fp32() -> Iterator[None]:
    """torch's Muon runs its iteration in bf16, which is fast on GPUs and on CPUs with AMX or
    AVX512-BF16 but emulated ~40x slower than fp32 on AVX2-only CPUs (`benchmarks/muon_precision.py`).
    torch has no switch for it, so its module-level function is swapped for the fp32 one while a step
    runs (torch is pinned; tests/train/test_optim.py checks the swap takes effect and is undone)."""
    original = torch_muon._zeropower_via_newtonschulz
    torch_muon._zeropower_via_newtonschulz = orthogonalise_fp32
    try:
        yield
    finally:
        torch_muon._zeropower_via_newtonschulz = original


class Fp32Muon(torch.optim.Muon):
    """torch's Muon with the orthogonalisation in fp32: what `precision: fp32` means for the optimizer."""

    def step(self, closure=None):
        with newton_schulz_in_fp32():
            return super().step(closure)


def build_muon(model: torch.nn.Module, train_params: TrainParams, device: torch.device,
               precision: str) -> MuonWithAdamW:
    named = trainable(model)
    matrices = [(n, q) for n, q in named if is_hidden_matrix(n, q)]
    rest = [(n, q) for n, q in named if not is_hidden_matrix(n, q)]
    # "match_rms_adamw" scales Muon's orthogonalised step to the RMS of a typical AdamW step, so one
    # learning_rate and schedule serve both optimizers. Weight decay is decoupled in both, set apart.
    muon_class = Fp32Muon if precision == "fp32" else torch.optim.Muon
    muon = muon_class([q for _, q in matrices], lr=train_params.learning_rate,
                      weight_decay=train_params.muon_weight_decay, momentum=train_params.muon_momentum,
                      nesterov=True, adjust_lr_fn="match_rms_adamw")
    return MuonWithAdamW(muon, build_adamw(rest, train_params, device))


def build_optimizer(model: torch.nn.Module, train_params: TrainParams, device: torch.device,
                    precision: str = "fp32") -> torch.optim.AdamW | MuonWithAdamW:
    """`precision` is the resolved training precision (fp32 or bf16): with fp32, Muon's iteration is fp32 too."""
    if train_params.optimizer == "muon":
        return build_muon(model, train_params, device, precision)
    return build_adamw(trainable(model), train_params, device)


class WarmupCosine:
    """Multiplier of the peak learning rate at a step: linear warmup, then a half cosine down to
    min_lr / learning_rate at max_steps, flat after. An object, not a lambda, so LambdaLR's
    state_dict can save it with a checkpoint."""

    def __init__(self, warmup_steps: int, max_steps: int, min_ratio: float):
        self.warmup_steps = warmup_steps
        self.max_steps = max_steps
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps  # step 0 trains too, at a small but non-zero rate
        decay_steps = max(1, self.max_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return self.min_ratio + 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - self.min_ratio)


def build_schedule(optimizer: torch.optim.Optimizer | MuonWithAdamW, train_params: TrainParams
                   ) -> torch.optim.lr_scheduler.LambdaLR | SteppedAsOne:
    """One LambdaLR per optimizer (a MuonWithAdamW gets one per part, stepped together)."""
    def schedule(part: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(part, WarmupCosine(
            train_params.warmup_steps, train_params.max_steps, train_params.min_lr / train_params.learning_rate
        ))

    if isinstance(optimizer, MuonWithAdamW):
        return SteppedAsOne({name: schedule(part) for name, part in optimizer.parts.items()})
    return schedule(optimizer)
