"""Our GPT against Hugging Face's GPT-2 implementation: forward and forward+backward tokens/s, same
weights, same batch, same threads, measured side by side in one run (the compare stage's part (c)).

    python benchmarks/hf_speed.py                        # the `model` section of params.yaml, random weights
    python benchmarks/hf_speed.py --preset gpt2 --seq 256 --batch 4
    python benchmarks/hf_speed.py --model-dir models/pretrain --threads 2 --precision fp32

Throughput does not depend on the weights' values, so random weights measure the same as trained ones.
"""
from __future__ import annotations

import argparse
import json

import torch

from tinygpt.core.device import resolve_device, resolve_precision
from tinygpt.eval.speed import SpeedSettings, compare_speed, format_speed
from tinygpt.model import config as gpt_config, weights
from tinygpt.model.gpt import GPT
from tinygpt.model.hf import hf_from_gpt
from tinygpt.pipeline.sections import load_named


def build_model(args: argparse.Namespace) -> GPT:
    if args.model_dir:
        return weights.load_model(args.model_dir)
    config = gpt_config.preset(args.preset) if args.preset else load_named("model").model
    torch.manual_seed(0)
    return GPT(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--model-dir", help="a saved tinygpt model (config.json + model.safetensors)")
    shape.add_argument("--preset", choices=sorted(gpt_config.PRESETS), help="a named shape, random weights")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=0, help="tokens per row (0: the model's block_size)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON too")
    args = parser.parse_args()

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    ours = build_model(args)
    settings = SpeedSettings(args.batch, args.seq, args.warmup, args.repeats, args.threads)
    result = compare_speed(ours, hf_from_gpt(ours), settings, device, precision)
    c = ours.config
    print(f"model: {c.n_layer} layers, {c.n_head} heads, {c.n_embd} wide, vocab {c.vocab_size}, "
          f"{ours.param_counts().total:,} parameters")
    print(format_speed(result))
    if args.json:
        print(json.dumps(result.metrics(), indent=2))


if __name__ == "__main__":
    main()
