"""Muon with its Newton-Schulz iteration in fp32: the same iteration as torch's (which runs in bf16),
more exact, chosen by the training precision, and torch's function is restored after every step."""
import torch
import torch.optim._muon as torch_muon

from tinygpt.train.config import TrainParams
from tinygpt.train.optim import Fp32Muon, build_optimizer, orthogonalise_fp32

COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_fp32_iteration_matches_torchs_bf16_one_and_float64():
    torch.manual_seed(0)
    for shape in [(384, 128), (128, 512), (64, 64)]:
        update = torch.randn(shape)
        ours = orthogonalise_fp32(update, COEFFICIENTS, 5, 1e-7)
        exact = orthogonalise_fp32(update, COEFFICIENTS, 5, 1e-7, dtype=torch.float64)
        torchs = torch_muon._zeropower_via_newtonschulz(update, COEFFICIENTS, 5, 1e-7)
        assert ours.shape == shape and ours.dtype == torch.float32
        assert relative_error(ours, exact) < 1e-5  # fp32 rounding only
        assert relative_error(torchs, exact) < 3e-2  # bf16 keeps ~3 significant digits
        # Orthogonalised: the singular values land in the iteration's band around 1 (about 0.7 to 1.2).
        singular = torch.linalg.svdvals(exact)
        assert singular.min() > 0.5 and singular.max() < 1.3


def test_fp32_muon_step_is_torchs_muon_update_with_the_fp32_iteration():
    torch.manual_seed(1)
    weight = torch.randn(128, 384)
    grad = torch.randn(128, 384)
    param = torch.nn.Parameter(weight.clone())
    optimizer = Fp32Muon([param], lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True,
                         adjust_lr_fn="match_rms_adamw")
    param.grad = grad.clone()
    optimizer.step()
    # By hand: first step, momentum buffer = (1 - m) g; Nesterov update = lerp(g, buf, m);
    # decoupled decay, then the orthogonalised update at lr x 0.2 sqrt(max(rows, cols)).
    buffer = 0.05 * grad
    nesterov = grad + 0.95 * (buffer - grad)
    expected = weight * (1 - 0.02 * 0.1) - 0.02 * 0.2 * 384**0.5 * orthogonalise_fp32(nesterov, COEFFICIENTS, 5, 1e-7)
    assert torch.allclose(param.detach(), expected, atol=1e-6)
    assert torch_muon._zeropower_via_newtonschulz is not orthogonalise_fp32  # swapped back after the step


def test_the_training_precision_picks_the_iteration():
    model = torch.nn.Module()
    model.h = torch.nn.ModuleList([torch.nn.Linear(8, 8)])
    p = TrainParams(optimizer="muon")
    fp32 = build_optimizer(model, p, torch.device("cpu"), "fp32").parts["muon"]
    bf16 = build_optimizer(model, p, torch.device("cpu"), "bf16").parts["muon"]
    assert type(fp32) is Fp32Muon and type(bf16) is torch.optim.Muon
