"""GPU check: the default pipeline's pretraining on CUDA, then GPT-2 small (124M) for a few hundred steps,
each with tokens/s and model FLOPs utilisation (MFU) against the GPU's bf16 peak; under 8 minutes on one GPU.

    python benchmarks/gpu_check.py                          # from the repository root
    python benchmarks/gpu_check.py --budget-s 300 --gpt2-steps 200 --out gpu_check.json

Phase `pretrain`: tinygpt.train.loop.train with params.yaml's model and train sections on CUDA, on
data/split/{train,val}.bin; where those are absent (or with --corpus), on the corpus
(../shared/corpora/tinyshakespeare.txt, else data/raw/input.txt) tokenized and split into a temp dir by
the library's functions, as the tokenize and split stages would.
Phase `gpt2`: the same loop on the `gpt2` preset (12 layers, 768 wide, 1024-token context) with the full
50,257-token softmax (no train.shortlist_vocab), bf16 autocast, torch.compile, a batch chosen from the
GPU's memory (halved if it runs out; --gpt2-batch sets it) and GPT-2 small's learning rate; the rest of
the train section (optimizer, clipping, input noise, ...) as params.yaml has it.

Checkpoints go to temp dirs, deleted after. tokens/s is the median over the steps after the first ten
(the first compiles); MFU counts tinygpt.train.flops.flops_per_token over the softmax rows the loop
trains (the compact head for `pretrain`) against tinygpt.train.flops.BF16_PEAKS; an unknown GPU gets no
MFU. A phase stops after the step that reaches its deadline (pretrain: half the budget, gpt2: all of it);
gpt2 is skipped if pretrain spent the whole budget. Without a CUDA device it exits with status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import statistics
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tinygpt.core import io
from tinygpt.core.compute import ComputeParams
from tinygpt.core.device import resolve_precision
from tinygpt.data import tokenizer
from tinygpt.data.corpus_tokens import TokenFiles, tokenize_corpus
from tinygpt.data.tokens import read_offsets, read_tokens, split_tokens, write_tokens
from tinygpt.model.config import GPTConfig, preset
from tinygpt.model.shortlist import CompactVocabulary
from tinygpt.pipeline import paths
from tinygpt.pipeline.sections import load_named
from tinygpt.train.config import TrainParams
from tinygpt.train.flops import GpuPeak, flops_per_token, gpu_peak, mfu
from tinygpt.train.loop import train

NO_CUDA_EXIT = 2
CORPORA = (Path("../shared/corpora/tinyshakespeare.txt"), paths.RAW_CORPUS)  # tried in order
WARMUP_STEPS = 10  # left out of tokens/s: the first step compiles
PRETRAIN_SHARE = 0.5  # of the budget: the pretrain phase's deadline
GPT2_STEPS = 300
GPT2_LR, GPT2_MIN_LR = 6e-4, 6e-5  # GPT-2 small's; params.yaml's 3e-3 is its 6 x 128 model's
# GPU memory per 1024-token row of gpt2 training: a generous guess, not a measurement (12 layers'
# activations, the 50,257-wide logits in bf16 and fp32); a batch that still does not fit is halved.
GIB_PER_GPT2_ROW = 4
MAX_GPT2_BATCH = 32  # 32 x 1024 tokens a step at most, whatever the GPU's memory

# --tiny (with --device cpu): both phases in miniature, so a test can run the whole script in seconds.
TINY_MODEL = {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 32}
TINY_TRAIN = {"max_steps": 6, "batch_size": 2, "warmup_steps": 2, "eval_interval": 3, "eval_batches": 1,
              "checkpoint_interval": 3, "compile": False}
TINY_GPT2 = GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=32)
TINY_GPT2_STEPS, TINY_GPT2_BATCH = 4, 2


# ---------------------------------------------------------------- data


@dataclass
class Split:
    train: Path
    val: Path
    source: str  # what the tokens came from, for the report


def find_split(corpus: Path | None, work_dir: Path, sections: types.SimpleNamespace) -> Split:
    """data/split's files, or the corpus tokenized and split into `work_dir`."""
    if corpus is None and paths.TRAIN_BIN.exists() and paths.VAL_BIN.exists():
        return Split(paths.TRAIN_BIN, paths.VAL_BIN, str(paths.SPLIT_DIR))
    if corpus is not None and not corpus.is_file():
        sys.exit(f"gpu_check: --corpus {corpus}: no such file; give a UTF-8 text file")
    corpus = corpus or next((path for path in CORPORA if path.is_file()), None)
    if corpus is None:
        sys.exit(f"gpu_check: no {paths.TRAIN_BIN} and {paths.VAL_BIN}, and no corpus at "
                 f"{' or '.join(map(str, CORPORA))}; run `dvc repro split` or pass --corpus FILE")
    return tokenized_split(corpus, work_dir, sections.tokenize.encoding, sections.split.val_fraction)


def tokenized_split(corpus: Path, out_dir: Path, encoding: str, val_fraction: float) -> Split:
    """The corpus as one document, tokenized and cut into train and val as the tokenize and split stages do."""
    files = TokenFiles(out_dir / "tokens.bin", out_dir / "offsets.npy", out_dir / "documents.npy")
    tokenize_corpus(corpus, np.array([0, corpus.stat().st_size], dtype=np.int64), tokenizer.get_encoding(encoding),
                    files, progress=False)
    byte_offsets, char_offsets = read_offsets(files.offsets)
    train_part, val_part, _ = split_tokens(read_tokens(files.tokens), byte_offsets, char_offsets, val_fraction)
    split = Split(out_dir / "train.bin", out_dir / "val.bin", str(corpus))
    write_tokens(split.train, train_part.tokens)
    write_tokens(split.val, val_part.tokens)
    return split


# ---------------------------------------------------------------- the two phases


@dataclass
class Phase:
    name: str
    config: GPTConfig
    train_params: TrainParams
    compute: ComputeParams
    softmax_rows: int  # rows of the LM head the loop trains: the compact vocabulary, or all of it


def pretrain_phase(sections: types.SimpleNamespace, split: Split, device: torch.device, tiny: bool) -> Phase:
    """params.yaml's model, train and compute sections, on `device`."""
    config, p = sections.model, sections.train
    if tiny:
        config, p = dataclasses.replace(config, **TINY_MODEL), dataclasses.replace(p, **TINY_TRAIN)
    rows = config.vocab_size
    if p.shortlist_vocab:
        rows = CompactVocabulary.of_tokens(read_tokens(split.train), config.vocab_size).n_rows
    return Phase("pretrain", config, p, ComputeParams(device.type, sections.compute.precision), rows)


def gpt2_phase(sections: types.SimpleNamespace, device: torch.device, tiny: bool, steps: int, batch: int) -> Phase:
    """The `gpt2` preset with the full softmax, bf16 autocast and (except --tiny) torch.compile."""
    config = TINY_GPT2 if tiny else preset("gpt2")
    p = dataclasses.replace(
        sections.train, compile=not tiny, max_steps=steps, batch_size=batch, grad_accum_steps=1,
        learning_rate=GPT2_LR, min_lr=GPT2_MIN_LR,
        warmup_steps=min(sections.train.warmup_steps, steps // 5), shortlist_vocab=False, unseen_smoothing=0.0,
        eval_interval=steps, checkpoint_interval=steps,  # evaluate at the start and the end, save once
    )
    return Phase("gpt2", config, p, ComputeParams(device.type, "bf16"), config.vocab_size)


def gpt2_batch(device: torch.device, asked: int, tiny: bool) -> int:
    if asked:
        return asked
    if tiny or device.type != "cuda":
        return TINY_GPT2_BATCH
    gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    return max(1, min(MAX_GPT2_BATCH, int(gib // GIB_PER_GPT2_ROW)))


class BudgetSpent(Exception):
    """Raised from train()'s step callback to end a phase at its deadline."""


@dataclass
class Recorder:
    """train()'s on_step: keeps every step's and every evaluation's row; past the deadline, ends the run
    after the step (so each phase trains at least one)."""

    deadline: float  # time.monotonic()
    max_steps: int
    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)

    def __call__(self, step: int, metrics: dict) -> None:
        if "val_loss" in metrics:
            self.evals.append({"step": step, **metrics})
            return
        self.steps.append({"step": step, **metrics})
        if step < self.max_steps and time.monotonic() >= self.deadline:
            raise BudgetSpent


def run_phase(phase: Phase, split: Split, deadline: float, device: torch.device, peak: GpuPeak | None) -> dict:
    recorder = Recorder(deadline, phase.train_params.max_steps)
    torch._dynamo.reset()  # graphs compiled for the other phase's shapes would make these dynamic
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"gpu_check_{phase.name}_") as checkpoints:
        try:
            train(phase.config, phase.train_params, split.train, split.val, Path(checkpoints), on_step=recorder,
                  compute=phase.compute)
            status = "complete"
        except BudgetSpent:
            status = "stopped: budget spent"
    return phase_report(phase, recorder, status, time.perf_counter() - started, device, peak)


def run_gpt2(phase: Phase, split: Split, deadline: float, device: torch.device, peak: GpuPeak | None) -> dict:
    """run_phase, halving the batch while the GPU runs out of memory."""
    while True:
        try:
            return run_phase(phase, split, deadline, device, peak)
        except torch.OutOfMemoryError:
            batch = phase.train_params.batch_size
            if batch == 1:
                raise
        # Outside the except block: its traceback holds the failed run's tensors.
        gc.collect()
        torch.cuda.empty_cache()
        print(f"gpu_check: gpt2 ran out of GPU memory at batch {batch}; retrying at {batch // 2}", file=sys.stderr)
        phase = dataclasses.replace(phase, train_params=dataclasses.replace(phase.train_params, batch_size=batch // 2))


def phase_report(phase: Phase, recorder: Recorder, status: str, wall_s: float, device: torch.device,
                 peak: GpuPeak | None) -> dict:
    c, p, steps = phase.config, phase.train_params, recorder.steps
    tokens_per_step = p.batch_size * p.grad_accum_steps * c.block_size
    timed = steps[min(WARMUP_STEPS, len(steps) // 2):]
    tokens_per_s = statistics.median(row["tokens_per_s"] for row in timed)
    per_token = flops_per_token(c, head_rows=phase.softmax_rows)
    last_eval = recorder.evals[-1]
    return {
        "phase": phase.name, "status": status, "steps": len(steps), "max_steps": p.max_steps,
        "model": {**c.to_dict(), "softmax_rows": phase.softmax_rows},
        "batch_size": p.batch_size * p.grad_accum_steps, "seq_len": c.block_size, "optimizer": p.optimizer,
        "precision": resolve_precision(phase.compute.precision, device), "compile": p.compile,
        "first_step_s": tokens_per_step / steps[0]["tokens_per_s"],
        "tokens_per_s": tokens_per_s,
        "flops_per_token": per_token,
        "mfu": mfu(tokens_per_s, per_token, peak.flops) if peak else None,
        "val_loss": last_eval["val_loss"], "val_loss_step": last_eval["step"],
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "wall_s": wall_s,
    }


def skipped(phase: Phase) -> dict:
    return {"phase": phase.name, "status": "skipped: budget spent", "steps": 0, "max_steps": phase.train_params.max_steps}


# ---------------------------------------------------------------- output


def device_line(device: torch.device, name: str, peak: GpuPeak | None) -> str:
    if device.type != "cuda":
        return f"device: {name}; no peak for a CPU, so no MFU"
    if peak is None:
        return (f"device: {name}; unknown GPU: no bf16 peak in tinygpt.train.flops.BF16_PEAKS, so no MFU "
                "(add its dense bf16 FLOP/s there)")
    note = f" ({peak.note})" if peak.note else ""
    return f"device: {name}; dense bf16 peak {peak.flops / 1e12:.0f} TFLOP/s{note}"


def phase_line(r: dict) -> str:
    if not r["status"].startswith(("complete", "stopped")):
        return f"{r['phase']}: {r['status']}"
    shown_mfu = f"MFU {r['mfu']:.1%}" if r["mfu"] is not None else "MFU n/a"
    return (f"{r['phase']}: {r['steps']}/{r['max_steps']} steps ({r['status']}), {r['tokens_per_s']:,.0f} tokens/s, "
            f"{shown_mfu}, val loss {r['val_loss']:.4f} at step {r['val_loss_step']}, first step "
            f"{r['first_step_s']:.1f} s, {r['wall_s']:.0f} s")


COLUMNS = ("phase", "status", "steps", "batch x seq", "precision", "compile", "tokens/s", "MFU", "val loss (step)",
           "GPU GiB", "wall s")


def table_row(r: dict) -> list[str]:
    if "tokens_per_s" not in r:
        return [r["phase"], r["status"], f"0/{r['max_steps']}"] + ["-"] * (len(COLUMNS) - 3)
    return [
        r["phase"], r["status"], f"{r['steps']}/{r['max_steps']}", f"{r['batch_size']} x {r['seq_len']}",
        r["precision"], "yes" if r["compile"] else "no", f"{r['tokens_per_s']:,.0f}",
        f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a", f"{r['val_loss']:.4f} ({r['val_loss_step']})",
        f"{r['peak_gpu_memory_gib']:.1f}" if r["peak_gpu_memory_gib"] is not None else "-", f"{r['wall_s']:.0f}",
    ]


def table(results: list[dict]) -> str:
    rows = [list(COLUMNS)] + [table_row(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget of both phases (s)")
    parser.add_argument("--gpt2-steps", type=int, default=None, help=f"gpt2 phase's steps (default {GPT2_STEPS})")
    parser.add_argument("--gpt2-batch", type=int, default=0, help="gpt2 phase's batch (0: from the GPU's memory)")
    parser.add_argument("--corpus", type=Path, help="tokenize this text file instead of reading data/split")
    parser.add_argument("--out", type=Path, help="also write the summary as JSON here")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # with --device cpu: the test
    args = parser.parse_args(argv)
    if args.gpt2_steps is None:
        args.gpt2_steps = TINY_GPT2_STEPS if args.tiny else GPT2_STEPS
    if args.gpt2_steps < 1:
        parser.error("--gpt2-steps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # train() turns on torch's deterministic algorithms; cuBLAS is deterministic only with this workspace
    # setting, which torch reads at the first matmul on the GPU. Without it every matmul warns.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"no CUDA device; this check needs a GPU (torch {torch.__version__}, built with CUDA "
              f"{torch.version.cuda or 'none'})", file=sys.stderr)
        return NO_CUDA_EXIT
    started = time.monotonic()
    sections = load_named("model", "train", "compute", "tokenize", "split")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = gpu_peak(name) if device.type == "cuda" else None
    print(device_line(device, name, peak))
    with tempfile.TemporaryDirectory(prefix="gpu_check_data_") as work:
        split = find_split(args.corpus, Path(work), sections)
        print(f"data: {split.source}")
        results = [run_phase(pretrain_phase(sections, split, device, args.tiny), split,
                             started + PRETRAIN_SHARE * args.budget_s, device, peak)]
        print(phase_line(results[-1]))
        gpt2 = gpt2_phase(sections, device, args.tiny, args.gpt2_steps, gpt2_batch(device, args.gpt2_batch, args.tiny))
        if time.monotonic() < started + args.budget_s:
            results.append(run_gpt2(gpt2, split, started + args.budget_s, device, peak))
        else:
            results.append(skipped(gpt2))
        print(phase_line(results[-1]))
    summary = {"device": name, "peak_flops": peak.flops if peak else None, "peak_note": peak.note if peak else None,
               "torch": torch.__version__, "data": split.source, "budget_s": args.budget_s,
               "wall_s": time.monotonic() - started, "phases": results}
    print("\n" + table(results))
    if args.out:
        io.write_json(args.out, summary)
        print(f"summary written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
