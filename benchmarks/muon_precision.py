"""Muon's Newton-Schulz orthogonalisation in bf16 (torch's) against fp32 (ours), side by side.

    python benchmarks/muon_precision.py                # the blocks' matrices of params.yaml's model
    python benchmarks/muon_precision.py --threads 2 --repeats 20

Times one optimizer step of Muon over the shapes of the default model's hidden matrices, alternating the
two versions so other load slows both alike, and prints their ratio; then the error of each against a
float64 iteration. On CPUs without AMX or AVX512-BF16 torch emulates bf16 matmuls, which is where the
fp32 iteration (used whenever training runs in fp32) pays off.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from tinygpt.core.device import cpu_has_fast_bf16
from tinygpt.model.gpt import GPT
from tinygpt.pipeline.sections import load_named
from tinygpt.train.optim import Fp32Muon, is_hidden_matrix, orthogonalise_fp32

COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # torch.optim.Muon's defaults


def hidden_matrices(config) -> list[torch.nn.Parameter]:
    return [q for n, q in GPT(config).named_parameters() if is_hidden_matrix(n, q)]


def time_step(optimizer: torch.optim.Optimizer, grads: list[torch.Tensor]) -> float:
    for param, grad in zip(optimizer.param_groups[0]["params"], grads):
        param.grad = grad.clone()
    started = time.perf_counter()
    optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_named("model").model
    torch.manual_seed(0)
    matrices = hidden_matrices(config)
    grads = [torch.randn_like(q) for q in matrices]
    versions = {"bf16 (torch)": torch.optim.Muon, "fp32 (ours)": Fp32Muon}
    optimizers = {name: cls([q.detach().clone().requires_grad_() for q in matrices], lr=1e-3)
                  for name, cls in versions.items()}
    seconds = {name: [] for name in versions}
    for _ in range(args.repeats + 1):  # the first round warms up
        for name, optimizer in optimizers.items():
            seconds[name].append(time_step(optimizer, grads))
    median = {name: statistics.median(times[1:]) for name, times in seconds.items()}
    print(f"CPU fast bf16 (AMX / AVX512-BF16): {cpu_has_fast_bf16()}; torch threads {torch.get_num_threads()}; "
          f"{len(matrices)} matrices, {args.repeats} timed steps each")
    for name, value in median.items():
        print(f"  {name:14s} {value * 1e3:8.1f} ms per Muon step")
    print(f"  ratio bf16 / fp32: {median['bf16 (torch)'] / median['fp32 (ours)']:.1f}x")

    exact = [orthogonalise_fp32(g, COEFFICIENTS, 5, 1e-7, dtype=torch.float64) for g in grads]
    torch_ns = torch.optim._muon._zeropower_via_newtonschulz
    for name, version in {"bf16 (torch)": torch_ns, "fp32 (ours)": orthogonalise_fp32}.items():
        errors = [((version(g, COEFFICIENTS, 5, 1e-7).double() - e).norm() / e.norm()).item() for g, e in zip(grads, exact)]
        print(f"  {name:14s} relative error against float64: max {max(errors):.2e}")


if __name__ == "__main__":
    main()
