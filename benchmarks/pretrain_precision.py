"""bf16 autocast against fp32 for pretraining on this machine: speed and the loss curve, side by side.

    python benchmarks/pretrain_precision.py                 # model + train sections of params.yaml, 300 steps
    python benchmarks/pretrain_precision.py --steps 500 --threads 2 --compile

The two runs start from the same weights and see the same batches (same seed); their steps alternate
(fp32, bf16, fp32, ...) so load from other processes slows both alike, and each step's time is measured
as CPU time of this process when --cpu-time is given (steadier than wall time on shared cores). A third
run, fp32 with another seed, measures the noise: bf16 is "within noise" when its distance from the fp32
curve is no larger than the distance between the two fp32 seeds. `precision: auto` relies on this.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tinygpt.data.batches import fixed_batches
from tinygpt.data.tokens import read_tokens
from tinygpt.pipeline import paths
from tinygpt.pipeline.sections import load_named
from tinygpt.train.checkpoint import CheckpointDir
from tinygpt.train.loop import compiled, estimate_loss, init_state, pretrain_step


def run_lockstep(config, p, precisions: dict[str, tuple[str, int]], steps: int, cpu_time: bool, eval_every: int):
    """Train one model per entry (label -> (precision, seed)) in lockstep; per-step times and losses."""
    device = torch.device("cpu")
    train_tokens, val_tokens = read_tokens(paths.TRAIN_BIN), read_tokens(paths.VAL_BIN)
    val = fixed_batches(val_tokens, config.block_size, p.batch_size, p.eval_batches, p.seed + 2, "val.bin")
    scratch = CheckpointDir(Path(tempfile.mkdtemp()), {})  # named in error messages only; nothing is saved
    clock = time.process_time if cpu_time else time.perf_counter
    runs = {}
    for label, (precision, seed) in precisions.items():
        q = dataclasses.replace(p, seed=seed)
        state = init_state(config, q, train_tokens, device, precision)
        runs[label] = {"state": state, "runner": compiled(state.model, q, device), "p": q, "precision": precision,
                       "seconds": [], "loss": [], "val": []}
    for step in range(steps):
        for run in runs.values():
            started = clock()
            row = pretrain_step(run["state"], run["runner"], run["p"], device, run["precision"], scratch, 0)
            run["seconds"].append(clock() - started)
            run["loss"].append(row["loss"])
            if (step + 1) % eval_every == 0 or step + 1 == steps:
                run["val"].append((step + 1, estimate_loss(run["state"].model, val, device, run["precision"])))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models (as train.compile)")
    parser.add_argument("--cpu-time", action="store_true", help="time steps in CPU seconds (use with --threads 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = load_named("model", "train")
    config, p = sections.model, dataclasses.replace(sections.train, compile=args.compile)
    p = dataclasses.replace(p, max_steps=args.steps, warmup_steps=min(p.warmup_steps, args.steps))
    runs = run_lockstep(config, p, {"fp32": ("fp32", p.seed), "bf16": ("bf16", p.seed),
                                    "fp32 (other seed)": ("fp32", p.seed + 1000)},
                        args.steps, args.cpu_time, args.eval_every)
    tokens = p.batch_size * p.grad_accum_steps * config.block_size
    unit = "CPU s" if args.cpu_time else "s"
    skip = min(5, args.steps // 2)  # the first steps pay for allocation and compilation
    print(f"model {config}\n{args.steps} steps of {tokens} tokens, lr {p.learning_rate}, "
          f"threads {torch.get_num_threads()}, compile {args.compile}\n")
    speed = {label: tokens / statistics.median(run["seconds"][skip:]) for label, run in runs.items()}
    print(f"{'':>20} {'fp32':>10} {'bf16':>10}   ratio bf16/fp32")
    print(f"{'tokens/' + unit:>20} {speed['fp32']:>10.0f} {speed['bf16']:>10.0f}   {speed['bf16'] / speed['fp32']:.2f}x")
    print(f"\n{'step':>6} {'val fp32':>9} {'val bf16':>9} {'val fp32 seed2':>15} {'|bf16-fp32|':>12} {'|seed2-fp32|':>13}")
    for (step, a), (_, b), (_, c) in zip(*(runs[k]["val"] for k in ("fp32", "bf16", "fp32 (other seed)"))):
        print(f"{step:>6} {a:>9.4f} {b:>9.4f} {c:>15.4f} {abs(b - a):>12.4f} {abs(c - a):>13.4f}")
    window = max(1, args.steps // 10)
    last = {label: float(np.mean(run["loss"][-window:])) for label, run in runs.items()}
    gap_bf16 = abs(last["bf16"] - last["fp32"])
    gap_seed = abs(last["fp32 (other seed)"] - last["fp32"])
    print(f"\ntrain loss, mean of the last {window} steps: fp32 {last['fp32']:.4f}, bf16 {last['bf16']:.4f}, "
          f"fp32 other seed {last['fp32 (other seed)']:.4f}")
    val_gap = abs(runs["bf16"]["val"][-1][1] - runs["fp32"]["val"][-1][1])
    val_seed = abs(runs["fp32 (other seed)"]["val"][-1][1] - runs["fp32"]["val"][-1][1])
    within = gap_bf16 <= gap_seed and val_gap <= val_seed
    print(f"bf16 vs fp32: train {gap_bf16:.4f}, val {val_gap:.4f}; seed-to-seed noise: train {gap_seed:.4f}, "
          f"val {val_seed:.4f} -> {'within' if within else 'OUTSIDE'} noise; "
          f"speed {speed['bf16'] / speed['fp32']:.2f}x")


if __name__ == "__main__":
    main()
