"""RLHF rollouts on the one decoding engine (`tinygpt.model.sampling`, KV cache), by next-token draw:
torch.multinomial over the LM head's logits (`sample_next`, the user-facing rule), the full head's
inverse CDF (one uniform per row, `sample_softmax`) and the compact head's (the softmax over the distinct
embedding rows, tinygpt.model.heads); same weights, prompts, threads and precision, side by side in one run.

    python benchmarks/rollout_speed.py                            # the `model` section, random weights
    python benchmarks/rollout_speed.py --model-dir models/pretrain --batch 32 --prompt 8 --new 24

Random weights get the embedding a pretrained model has: the training split's 11,234 token ids seen,
every other id sharing one row, so the compact head applies.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tinygpt.core.device import autocast, resolve_precision
from tinygpt.data.tokenizer import EOT_ID
from tinygpt.model import weights
from tinygpt.model.gpt import GPT
from tinygpt.model.heads import CompactHead, FullHead
from tinygpt.model.sampling import generate
from tinygpt.model.shortlist import ShortlistGPT
from tinygpt.model.vocabulary import CompactVocabulary
from tinygpt.pipeline.sections import load_named

TRAIN_TOKENS = 11_234  # distinct tokens of Tiny Shakespeare's training split


def build_model(model_dir: str | None) -> GPT:
    if model_dir:
        return weights.load_model(model_dir)
    torch.manual_seed(0)
    config = load_named("model").model
    vocab = CompactVocabulary.of_tokens(np.arange(TRAIN_TOKENS), config.vocab_size)
    return ShortlistGPT(config, vocab).to_full().eval()


def best_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def rollouts(model: GPT, prompts: torch.Tensor, new: int, precision: str, head: FullHead | None):
    """One batch of rollouts at temperature 1 through `head` (None: torch.multinomial via sample_next)."""
    def run() -> None:
        with autocast(prompts.device, precision):
            generate(model, prompts, new, 1.0, eot_id=EOT_ID, generator=torch.Generator().manual_seed(1), head=head)
    return run


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
    precision = resolve_precision(args.precision, torch.device("cpu"))
    prompts = torch.randint(0, 50000, (args.batch, args.prompt), generator=torch.Generator().manual_seed(0))
    draws = {"multinomial (sample_next)": None, "full head (inverse CDF)": FullHead(model),
             "compact head": CompactHead.of(model)}
    tokens = args.batch * args.new
    print(f"{args.batch} prompts x {args.new} new tokens, {torch.get_num_threads()} threads, {precision}")
    for name, head in draws.items():
        if name == "compact head" and head is None:
            print(f"{name:28s} n/a: the embedding has too few repeated rows")
            continue
        seconds = best_seconds(rollouts(model, prompts, args.new, precision, head), args.repeats)
        print(f"{name:28s} {seconds:8.3f} s  {tokens / seconds:10.0f} tokens/s")


if __name__ == "__main__":
    main()
