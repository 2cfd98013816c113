"""Throughput of our GPT against Hugging Face's GPT-2 implementation, measured side by side.

Both models get the same weights (one is the export of the other), the same batch of tokens, the same
thread count and the same autocast. Timings interleave the two (ours, theirs, ours, theirs, ...) so a
burst of load from another process hits both alike, and the median over repeats is reported.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel

from tinygpt.core.device import autocast
from tinygpt.model.gpt import GPT

Logits = Callable[[torch.Tensor], torch.Tensor]  # (batch, seq) ids -> (batch, seq, vocab) logits


@dataclass
class SpeedSettings:
    batch_size: int = 8
    seq_len: int = 128
    warmup: int = 1  # untimed calls first: the first call pays for allocation and kernel selection
    repeats: int = 5  # timed calls; their median shrugs off one burst of load from another process
    threads: int = 0  # 0: leave torch's default (all cores)


@dataclass
class Timing:
    seconds: list[float]  # one per repeat
    tokens: int  # tokens per call

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / statistics.median(self.seconds)


@dataclass
class SpeedResult:
    settings: SpeedSettings
    threads: int  # the thread count actually used
    precision: str
    device: str
    timings: dict[str, dict[str, Timing]]  # implementation -> {"forward", "train_step"} -> Timing

    def metrics(self) -> dict:
        """{"tinygpt": {"forward_tokens_per_s": ...}, ..., "ratio": {...}, "threads": ...}."""
        out: dict = {
            impl: {f"{mode}_tokens_per_s": t.tokens_per_s for mode, t in modes.items()}
            for impl, modes in self.timings.items()
        }
        ours, theirs = self.timings["tinygpt"], self.timings["transformers"]
        out["ratio"] = {f"{mode}_ours_over_hf": ours[mode].tokens_per_s / theirs[mode].tokens_per_s for mode in ours}
        out.update(batch_size=self.settings.batch_size, seq_len=self.settings.seq_len,
                   repeats=self.settings.repeats, threads=self.threads)
        return out


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """Run with `n` intra-op threads (0: unchanged), restoring the previous count after."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def ours_logits(model: GPT) -> Logits:
    return lambda x: model(x)[0]


def hf_logits(model: GPT2LMHeadModel) -> Logits:
    return lambda x: model(input_ids=x, use_cache=False).logits


def forward_step(logits_fn: Logits, x: torch.Tensor, y: torch.Tensor) -> None:
    with torch.inference_mode():
        logits_fn(x)


def forward_backward(logits_fn: Logits, x: torch.Tensor, y: torch.Tensor) -> None:
    """Forward, loss and backward (no optimizer step): the part of training the implementation decides."""
    logits = logits_fn(x)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
    loss.backward()


def timed(step: Callable, logits_fn: Logits, x, y, device: torch.device, precision: str) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with autocast(device, precision):
        step(logits_fn, x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare_speed(
    ours: GPT, hf_model: GPT2LMHeadModel, settings: SpeedSettings, device: torch.device, precision: str, seed: int = 0
) -> SpeedResult:
    """Forward and forward+backward tokens/s of both implementations on one random batch."""
    config = ours.config
    seq = min(settings.seq_len or config.block_size, config.block_size)
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, config.vocab_size, (settings.batch_size, seq + 1), generator=gen).to(device)
    x, y = tokens[:, :-1], tokens[:, 1:]
    models = {"tinygpt": (ours.to(device), ours_logits(ours)), "transformers": (hf_model.to(device), hf_logits(hf_model))}
    steps = {"forward": forward_step, "train_step": forward_backward}  # keys: the metrics' names
    seconds = {impl: {mode: [] for mode in steps} for impl in models}
    with torch_threads(settings.threads) as threads:
        for mode, step in steps.items():
            for model, _ in models.values():
                model.train(mode == "train_step")  # dropout is whatever the config says, the same in both
            for repeat in range(settings.warmup + settings.repeats):
                for impl, (model, logits_fn) in models.items():
                    elapsed = timed(step, logits_fn, x, y, device, precision)
                    model.zero_grad(set_to_none=True)
                    if repeat >= settings.warmup:
                        seconds[impl][mode].append(elapsed)
    for model, _ in models.values():
        model.eval()
    n_tokens = settings.batch_size * seq
    timings = {impl: {mode: Timing(s, n_tokens) for mode, s in modes.items()} for impl, modes in seconds.items()}
    settings = SpeedSettings(settings.batch_size, seq, settings.warmup, settings.repeats, settings.threads)
    return SpeedResult(settings, threads, precision, str(device), timings)


def format_speed(result: SpeedResult, label: str = "") -> str:
    """A few lines for the console: tokens/s of each implementation and the ratio."""
    s = result.settings
    lines = [f"speed{' ' + label if label else ''}: batch {s.batch_size} x {s.seq_len} tokens, "
             f"{result.threads} threads, {result.precision} on {result.device}, median of {s.repeats}"]
    for mode in ("forward", "train_step"):
        ours = result.timings["tinygpt"][mode].tokens_per_s
        theirs = result.timings["transformers"][mode].tokens_per_s
        lines.append(f"  {mode:<10} tinygpt {ours:>10,.0f} tok/s   transformers {theirs:>10,.0f} tok/s   "
                     f"ratio {ours / theirs:.2f}x")
    return "\n".join(lines)
