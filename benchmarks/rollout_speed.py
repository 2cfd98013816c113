"""RLHF rollouts: `GPT.generate` (re-runs the prefix each token, torch.multinomial) against
`tinygpt.model.generate.generate_cached` (key/value cache, one uniform per row), same weights, prompts,
threads and precision, measured side by side in one run.

    python benchmarks/rollout_speed.py                            # the `model` section, random weights
    python benchmarks/rollout_speed.py --model-dir models/pretrain --batch 32 --prompt 8 --new 24
"""
from __future__ import annotations

import argparse
import time

import torch

from tinygpt.core.device import autocast, resolve_precision
from tinygpt.data.tokenizer import EOT_ID
from tinygpt.model import weights
from tinygpt.model.generate import generate_cached
from tinygpt.model.gpt import GPT
from tinygpt.pipeline.sections import load_named


def build_model(model_dir: str | None) -> GPT:
    if model_dir:
        return weights.load_model(model_dir)
    torch.manual_seed(0)
    return GPT(load_named("model").model).eval()


def best_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="a saved tinygpt model (config.json + model.safetensors)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--prompt", type=int, default=8)
    parser.add_argument("--new", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args.model_dir)
    device = torch.device("cpu")
    precision = resolve_precision(args.precision, device)
    prompts = torch.randint(0, 50000, (args.batch, args.prompt), generator=torch.Generator().manual_seed(0))

    def full() -> None:
        with torch.no_grad(), autocast(device, precision):
            model.generate(prompts, args.new, temperature=1.0, eot_id=EOT_ID,
                           generator=torch.Generator().manual_seed(1))

    def cached() -> None:
        with autocast(device, precision):
            generate_cached(model, prompts, args.new, 1.0, EOT_ID, torch.Generator().manual_seed(1))

    tokens = args.batch * args.new
    t_full, t_cached = best_seconds(full, args.repeats), best_seconds(cached, args.repeats)
    print(f"{args.batch} prompts x {args.new} new tokens, {torch.get_num_threads()} threads, {precision}")
    print(f"GPT.generate          {t_full:8.3f} s  {tokens / t_full:10.0f} tokens/s")
    print(f"generate_cached       {t_cached:8.3f} s  {tokens / t_cached:10.0f} tokens/s")
    print(f"speed-up              {t_full / t_cached:8.1f}x")


if __name__ == "__main__":
    main()
