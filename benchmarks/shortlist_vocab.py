"""Training tokens/s over the full 50,257-token softmax against the exact compact one
(`train.shortlist_vocab`), side by side, and the loss each reaches after the same steps.

    python benchmarks/shortlist_vocab.py                # model + train sections of params.yaml
    python benchmarks/shortlist_vocab.py --rounds 3 --steps 15

Both settings alternate within one process for --rounds rounds, so load from other processes slows
both alike. Each round builds both models from the same seed and times --steps compiled steps after
3 warm-up steps. The loss columns differ by design: the compact model is the full GPT whose unseen rows
start equal (and follows it step for step, tests/model/test_shortlist.py), and that start learns faster in the
first steps than GPT-2's independent random rows (15 steps from one seed, fp32 autocast bf16: 8.82 for
both the compact model and the full model with equal unseen rows, 9.62 with random rows).
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tinygpt.core.allocator import keep_freed_memory
from tinygpt.core.device import resolve_precision
from tinygpt.data.tokens import read_tokens
from tinygpt.pipeline import paths
from tinygpt.pipeline.sections import load_named
from tinygpt.train.checkpoint import CheckpointDir
from tinygpt.train.loop import compiled, init_state, pretrain_step


def measure(shortlist: bool, steps: int) -> tuple[float, float]:
    """(median tokens/s, mean loss of the timed steps) of compiled training steps on CPU."""
    sections = load_named("model", "train", "compute")
    config = sections.model
    p = dataclasses.replace(sections.train, shortlist_vocab=shortlist,
                            unseen_smoothing=sections.train.unseen_smoothing if shortlist else 0.0)
    device = torch.device("cpu")
    precision = resolve_precision(sections.compute.precision, device)
    state = init_state(config, p, read_tokens(paths.TRAIN_BIN), device, precision)
    runner = compiled(state.model, p, device)
    scratch = CheckpointDir(Path(tempfile.mkdtemp()), {})
    seconds, losses = [], []
    for step in range(3 + steps):
        started = time.perf_counter()
        row = pretrain_step(state, runner, p, device, precision, scratch, 0)
        if step >= 3:
            seconds.append(time.perf_counter() - started)
            losses.append(row["loss"])
    tokens = p.batch_size * p.grad_accum_steps * config.block_size
    return tokens / statistics.median(seconds), statistics.mean(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    keep_freed_memory()  # as every stage runs
    results: dict[str, list[tuple[float, float]]] = {"full": [], "shortlist": []}
    for _ in range(args.rounds):
        for setting in results:
            results[setting].append(measure(setting == "shortlist", args.steps))
    speed = {k: statistics.median(r[0] for r in v) for k, v in results.items()}
    loss = {k: statistics.mean(r[1] for r in v) for k, v in results.items()}
    print(f"training tokens/s, median of {args.rounds} rounds x {args.steps} steps (params.yaml model + train)")
    print(f"  full 50,257-token softmax   {speed['full']:8.0f} tok/s   mean loss {loss['full']:.3f}")
    print(f"  shortlist_vocab (exact)     {speed['shortlist']:8.0f} tok/s   mean loss {loss['shortlist']:.3f}")
    print(f"  ratio shortlist / full      {speed['shortlist'] / speed['full']:8.2f}x")


if __name__ == "__main__":
    main()
