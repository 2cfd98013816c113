"""Training tokens/s with glibc's default malloc against `tinygpt.core.allocator.keep_freed_memory`, side by side.

    python benchmarks/cpu_allocator.py              # model + train sections of params.yaml
    python benchmarks/cpu_allocator.py --rounds 3 --steps 15

mallopt settings last for the life of a process, so each measurement runs in a fresh child process; the
two settings alternate for --rounds rounds, so load from other processes slows both alike.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def measure(keep: bool, steps: int) -> float:
    """Median tokens/s of `steps` compiled bf16 training steps after 3 warm-up steps (in this process)."""
    import tempfile
    from pathlib import Path

    import torch

    from tinygpt.core.allocator import keep_freed_memory
    from tinygpt.core.device import resolve_precision
    from tinygpt.data.tokens import read_tokens
    from tinygpt.pipeline import paths
    from tinygpt.pipeline.sections import load_named
    from tinygpt.train.checkpoint import CheckpointDir
    from tinygpt.train.loop import compiled, init_state, pretrain_step

    if keep:
        keep_freed_memory()
    sections = load_named("model", "train", "compute")
    config, p = sections.model, sections.train
    device = torch.device("cpu")
    precision = resolve_precision(sections.compute.precision, device)
    state = init_state(config, p, read_tokens(paths.TRAIN_BIN), device, precision)
    runner = compiled(state.model, p, device)
    scratch = CheckpointDir(Path(tempfile.mkdtemp()), {})
    seconds = []
    for step in range(3 + steps):
        started = time.perf_counter()
        pretrain_step(state, runner, p, device, precision, scratch, 0)
        if step >= 3:
            seconds.append(time.perf_counter() - started)
    return p.batch_size * p.grad_accum_steps * config.block_size / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--child", choices=["default", "keep"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child == "keep", args.steps)))
        return
    speeds: dict[str, list[float]] = {"default": [], "keep": []}
    for _ in range(args.rounds):
        for setting in speeds:
            out = subprocess.run([sys.executable, __file__, "--child", setting, "--steps", str(args.steps)],
                                 check=True, capture_output=True, text=True).stdout
            speeds[setting].append(float(out.strip().splitlines()[-1]))
    default, keep = statistics.median(speeds["default"]), statistics.median(speeds["keep"])
    print(f"training tokens/s, median of {args.rounds} rounds x {args.steps} steps (params.yaml model + train)")
    print(f"  glibc default malloc      {default:8.0f}   {speeds['default']}")
    print(f"  keep_freed_memory()       {keep:8.0f}   {speeds['keep']}")
    print(f"  ratio keep / default      {keep / default:8.2f}x")


if __name__ == "__main__":
    main()
