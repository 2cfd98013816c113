"""Pretraining of the GPT on a token file: the loop, split into its named steps.

One optimizer step = `grad_accum_steps` micro-batches of random windows (batch), each run forward under
the chosen autocast (forward) and backward with its loss scaled by 1/grad_accum_steps (backward); then
the global gradient norm is measured and clipped (clip), the optimizer (AdamW, or Muon + AdamW) and the
schedule advance (step), and the step's numbers are recorded (log). Every `eval_interval` steps the loss is estimated on fixed batches
(evaluate); every `checkpoint_interval` steps the whole training state is saved (checkpoint), and a
rerun of the same configuration resumes from it and ends with the same weights, bit for bit. Under
torchrun, each process trains on its share of every batch and DistributedDataParallel averages the
gradients (`tinygpt.train.distributed`); every process evaluates the same fixed batches, rank 0 alone
reads and writes the checkpoint. The weights start random, or (train.init_from) from a model of the same
shape, which every process loads from the same source.
"""
from __future__ import annotations

import math
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tinygpt.core.compute import ComputeParams
from tinygpt.core.device import autocast, resolve_device, resolve_precision
from tinygpt.core.errors import TinyGptError
from tinygpt.core.modes import eval_mode
from tinygpt.data.batches import RandomWindows, fixed_batches
from tinygpt.data.tokens import read_tokens
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.model.shortlist import CompactVocabulary, ShortlistGPT
from tinygpt.train.checkpoint import CheckpointDir, key_material
from tinygpt.train.config import SCRATCH, TrainParams
from tinygpt.train.distributed import SINGLE, World, cpu_share, syncing, wrap
from tinygpt.train.init_from import init_weights
from tinygpt.train.optim import (MuonWithAdamW, SteppedAsOne, build_optimizer,
                                 build_schedule)

StepCallback = Callable[[int, dict], None]  # (step, metrics) -> None, e.g. StageRun.log_step

# Steps between updates of the progress bar's loss and speed: display only, a value is read at a glance.
LOG_INTERVAL = 10


class NonFiniteLossError(TinyGptError):
    """The loss or the gradient became NaN or infinite."""


@dataclass
class TrainState:
    """Everything a checkpoint holds: with it, training continues exactly as if never stopped."""

    model: GPT | ShortlistGPT
    optimizer: torch.optim.Optimizer | MuonWithAdamW
    schedule: torch.optim.lr_scheduler.LambdaLR | SteppedAsOne
    sampler: RandomWindows
    step: int = 0  # optimizer steps done
    train_time_s: float = 0.0  # time spent in training steps, over all sessions
    history: list[dict] = field(default_factory=list)  # one row per step
    evals: list[dict] = field(default_factory=list)  # one row per evaluation on the fixed batches

    def to_checkpoint(self, device: torch.device, world: World = SINGLE) -> dict:
        """Every process calls this (it gathers their RNG states); rank 0 saves the result."""
        rng = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        if world.world_size > 1:  # each process draws its own dropout masks
            rng = {"ranks": world.gather(rng)}
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng,
            "step": self.step,
            "train_time_s": self.train_time_s,
            "history": self.history,
            "evals": self.evals,
            "world_size": world.world_size,
        }

    def restore(self, saved: dict, device: torch.device, world: World = SINGLE) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        self.sampler.load_state_dict(saved["sampler"])
        rng = saved["rng"]["ranks"][world.rank] if "ranks" in saved["rng"] else saved["rng"]
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], device)
        self.step = saved["step"]
        self.train_time_s = saved["train_time_s"]
        self.history = list(saved["history"])
        self.evals = list(saved["evals"])


@dataclass
class TrainResult:
    model: GPT
    history: list[dict]  # per step: step, loss, lr, grad_norm, tokens_seen, tokens_per_s
    evals: list[dict]  # per evaluation: step, train_loss, val_loss, train_perplexity, val_perplexity
    metrics: dict
    checkpoint_dir: Path
    resumed_from: int  # the step the run resumed at (0 = from scratch)


# ---------------------------------------------------------------- the steps of one optimizer step


def forward(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
    with autocast(device, precision):
        _, loss = model(x.to(device), y.to(device))
    return loss


def backward(loss: torch.Tensor, grad_accum_steps: int) -> None:
    # Averaging the micro-batch losses makes the accumulated gradient that of one big batch.
    (loss / grad_accum_steps).backward()


def clip(model: torch.nn.Module, max_norm: float) -> float:
    """The global gradient norm before clipping (clipping only when max_norm > 0)."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm if max_norm > 0 else math.inf)
    return float(norm)


def optimizer_step(state: TrainState) -> None:
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.schedule.step()
    state.step += 1


def check_finite(value: float, what: str, step: int, checkpoints: CheckpointDir, last_saved: int) -> None:
    if math.isfinite(value):
        return
    kept = (f"the last good checkpoint (step {last_saved}) is kept in {checkpoints.path}"
            if last_saved > 0 else "no checkpoint was written yet")
    raise NonFiniteLossError(
        f"{what} is {value} at step {step}; training stopped and {kept}. "
        "Lower train.learning_rate, raise train.warmup_steps or set train.grad_clip, then rerun"
    )


def pretrain_step(state: TrainState, runner: torch.nn.Module, train_params: TrainParams, device: torch.device,
                  precision: str, checkpoints: CheckpointDir, last_saved: int, world: World = SINGLE,
                  ddp: torch.nn.Module | None = None) -> dict:
    """One optimizer step over grad_accum_steps micro-batches; returns the step's log row. `runner` is
    the model itself, its DistributedDataParallel wrapper `ddp`, or the torch.compile wrapper of either
    (all share the parameters). With several processes, each draws the whole batch and trains on its
    share, so the sampler's draws are those of one process; the logged loss is the mean over processes."""
    started = time.perf_counter()
    lr = state.optimizer.param_groups[0]["lr"]
    total = 0.0
    for micro in range(train_params.grad_accum_steps):
        x, y = state.sampler.next_batch()
        with syncing(ddp, last_micro_batch=micro == train_params.grad_accum_steps - 1):
            loss = forward(runner, world.share(x), world.share(y), device, precision)
            check_finite(loss.item(), "the training loss", state.step + 1, checkpoints, last_saved)
            backward(loss, train_params.grad_accum_steps)
        total += loss.item()
    grad_norm = clip(state.model, train_params.grad_clip)
    check_finite(grad_norm, "the gradient norm", state.step + 1, checkpoints, last_saved)
    optimizer_step(state)
    seconds = time.perf_counter() - started
    state.train_time_s += seconds
    tokens = train_params.grad_accum_steps * train_params.batch_size * state.model.config.block_size
    return {
        "step": state.step,  # steps done, so the first row is step 1
        "loss": world.mean(total, device) / train_params.grad_accum_steps,
        "lr": lr,
        "grad_norm": grad_norm,
        "tokens_seen": state.step * tokens,
        "tokens_per_s": tokens / seconds,
    }


# ---------------------------------------------------------------- evaluation on fixed batches


@torch.no_grad()
def estimate_loss(model: GPT, batches: list, device: torch.device, precision: str) -> float:
    """Mean loss over the fixed batches, dropout off; the model's mode is restored after."""
    with eval_mode(model):
        losses = [forward(model, x, y, device, precision).item() for x, y in batches]
    return float(np.mean(losses))


def estimate_losses(state: TrainState, eval_sets: dict[str, list], device: torch.device, precision: str) -> dict:
    row: dict = {"step": state.step}
    for split, batches in eval_sets.items():
        loss = estimate_loss(state.model, batches, device, precision)
        row[f"{split}_loss"] = loss
        row[f"{split}_perplexity"] = math.exp(min(loss, 50.0))  # exp overflows far above any real loss
    return row


# ---------------------------------------------------------------- the loop


def build_model(config: GPTConfig, train_params: TrainParams, train_tokens: np.ndarray,
                init: GPT | None = None) -> GPT | ShortlistGPT:
    """The model the loop trains: the GPT itself, or its exact compact form over the training vocabulary;
    with random weights, or those of `init` (a GPT of `config`)."""
    if not train_params.shortlist_vocab:
        return GPT(config) if init is None else init
    vocab = CompactVocabulary.of_tokens(train_tokens, config.vocab_size)
    if init is None:
        return ShortlistGPT(config, vocab, train_params.unseen_smoothing)
    return ShortlistGPT.from_full(init, vocab, train_params.unseen_smoothing)


def full_model(model: GPT | ShortlistGPT) -> GPT:
    return model.to_full() if isinstance(model, ShortlistGPT) else model


def init_state(config: GPTConfig, train_params: TrainParams, train_tokens: np.ndarray, device: torch.device,
               precision: str, world: World = SINGLE, init: GPT | None = None) -> TrainState:
    """The sampler of every process draws the whole batch (train_params.batch_size) from the same seed.
    `init`: the initial weights (init_weights), None for random ones."""
    torch.manual_seed(train_params.seed)  # initial weights, then dropout
    model = build_model(config, train_params, train_tokens, init).to(device)
    model.train()
    optimizer = build_optimizer(model, train_params, device, precision)
    if world.world_size > 1:
        torch.manual_seed(world.dropout_seed(train_params.seed))
    return TrainState(
        model=model,
        optimizer=optimizer,
        schedule=build_schedule(optimizer, train_params),
        sampler=RandomWindows(train_tokens, config.block_size, train_params.batch_size, seed=train_params.seed,
                              input_noise=train_params.input_noise),
    )


def compiled(model: GPT, train_params: TrainParams, device: torch.device) -> torch.nn.Module:
    """The module the loop calls; torch.compile shares the parameters, so checkpoints are unaffected."""
    if not train_params.compile:
        return model
    # On CPU, Inductor compiles C++ kernels; without a compiler it fails deep inside the first step.
    if device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c):
        raise TinyGptError("train.compile is true but no C++ compiler (g++, c++, clang++ or $CXX) is on PATH; "
                           "install one or set train.compile: false")
    return torch.compile(model)


@dataclass
class Session:
    """What one run of the loop needs besides the checkpointed state."""

    train_params: TrainParams
    device: torch.device
    precision: str
    runner: torch.nn.Module  # the model or its compiled wrapper
    eval_sets: dict[str, list]  # split name -> fixed batches
    checkpoints: CheckpointDir
    on_step: StepCallback | None
    last_saved: int = 0  # step of the newest checkpoint on disk
    world: World = SINGLE
    ddp: torch.nn.Module | None = None  # the DistributedDataParallel wrapper, with several processes
    init: dict = field(default_factory=lambda: {"from": SCRATCH})  # InitWeights.info


def start(config: GPTConfig, train_params: TrainParams, train_path: Path, val_path: Path, checkpoint_root: Path,
          on_step: StepCallback | None, code_version: str, world: World = SINGLE,
          compute: ComputeParams = ComputeParams()) -> tuple[TrainState, Session]:
    """A fresh state, or the checkpointed one of this configuration (read by rank 0, sent to every
    process), and the session around it."""
    config.validate()
    train_params.validate()
    compute.validate()
    world.check_batch(train_params.batch_size)
    # threads 0 means one per core: with several processes on a machine, its cores are shared out.
    threads = train_params.threads or (cpu_share(world.local_world_size) if world.world_size > 1 else 0)
    if threads:
        torch.set_num_threads(threads)
    device = world.own_device(resolve_device(compute.device))
    precision = resolve_precision(compute.precision, device)
    train_tokens, val_tokens = read_tokens(train_path), read_tokens(val_path)
    init = init_weights(config, train_params)
    state = init_state(config, train_params, train_tokens, device, precision, world, init.model)
    checkpoints = CheckpointDir(checkpoint_root, key_material(config, train_params, [train_path, val_path],
                                                              code_version, compute, init.info))
    saved = world.from_main(lambda: checkpoints.load(world.world_size))
    if saved is not None:
        state.restore(saved, device, world)
    eval_sets = {
        "train": fixed_batches(train_tokens, config.block_size, train_params.batch_size, train_params.eval_batches,
                               train_params.seed + 1, "train.bin"),
        "val": fixed_batches(val_tokens, config.block_size, train_params.batch_size, train_params.eval_batches,
                             train_params.seed + 2, "val.bin"),
    }
    ddp = wrap(state.model, device, world)
    runner = compiled(state.model if ddp is None else ddp, train_params, device)
    session = Session(train_params, device, precision, runner, eval_sets, checkpoints, on_step,
                      last_saved=state.step, world=world, ddp=ddp, init=init.info)
    return state, session


def after_step(state: TrainState, session: Session, row: dict) -> None:
    """Log the step; evaluate and checkpoint when their interval comes round, and after the last step.
    Every process evaluates (the same batches, the same weights), so all stay in step."""
    train_params = session.train_params
    state.history.append(row)
    if session.on_step:
        session.on_step(row["step"], {k: v for k, v in row.items() if k != "step"})
    last = state.step == train_params.max_steps
    if state.step % train_params.eval_interval == 0 or last:
        record_eval(state, estimate_losses(state, session.eval_sets, session.device, session.precision), session.on_step)
    if state.step % train_params.checkpoint_interval == 0 or last:
        checkpoint = state.to_checkpoint(session.device, session.world)
        if session.world.is_main:
            session.checkpoints.save(checkpoint)
        session.last_saved = state.step


@contextmanager
def deterministic_kernels() -> Iterator[None]:
    """Same seed, same weights, compiled too: Inductor's default kernels may differ run to run, and with
    deterministic algorithms on it picks deterministic ones. warn_only: an op with no deterministic kernel
    (some CUDA ones) warns instead of stopping the run. Restored afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


def train(config: GPTConfig, train_params: TrainParams, train_path: Path, val_path: Path, checkpoint_root: Path,
          on_step: StepCallback | None = None, code_version: str = "", world: World = SINGLE,
          compute: ComputeParams = ComputeParams()) -> TrainResult:
    """Train until train_params.max_steps, resuming from this configuration's checkpoint in `checkpoint_root`.
    `code_version` (codedeps.code_digest of this module: the code that decides the weights) joins the
    checkpoint key, so a checkpoint written by other code is never resumed. `world`: this process among torchrun's (its process group
    joined, `tinygpt.train.distributed.process_group`); only rank 0 writes the checkpoint. `compute`: the device
    and precision (params.yaml `compute`), which join the checkpoint key too."""
    with deterministic_kernels():
        return train_loop(config, train_params, train_path, val_path, checkpoint_root, on_step, code_version, world,
                          compute)


def train_loop(config: GPTConfig, train_params: TrainParams, train_path: Path, val_path: Path, checkpoint_root: Path,
               on_step: StepCallback | None, code_version: str, world: World = SINGLE,
               compute: ComputeParams = ComputeParams()) -> TrainResult:
    state, session = start(config, train_params, train_path, val_path, checkpoint_root, on_step, code_version, world,
                           compute)
    resumed_from = state.step
    replay(state, on_step)
    if state.step == 0:
        record_eval(state, estimate_losses(state, session.eval_sets, session.device, session.precision), on_step)
    bar = tqdm(total=train_params.max_steps, initial=state.step, desc="pretrain", unit="step", file=sys.stderr,
               dynamic_ncols=True, mininterval=1.0, disable=not world.is_main)
    while state.step < train_params.max_steps:
        row = pretrain_step(state, session.runner, train_params, session.device, session.precision,
                            session.checkpoints, session.last_saved, world, session.ddp)
        after_step(state, session, row)
        bar.update(1)
        if state.step % LOG_INTERVAL == 0:
            bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
    bar.close()
    metrics = summary(state, session.device, session.precision, world, session.init)
    return TrainResult(full_model(state.model), state.history, state.evals, metrics, session.checkpoints.path, resumed_from)


def record_eval(state: TrainState, row: dict, on_step: StepCallback | None) -> None:
    state.evals.append(row)
    if on_step:
        on_step(row["step"], {k: v for k, v in row.items() if k != "step"})


def replay(state: TrainState, on_step: StepCallback | None) -> None:
    """Send the restored history to the callback, so a resumed run's curves are complete."""
    if on_step is None:
        return
    for row in sorted(state.history + state.evals, key=lambda r: r["step"]):
        on_step(row["step"], {k: v for k, v in row.items() if k != "step"})


def peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def summary(state: TrainState, device: torch.device, precision: str, world: World = SINGLE,
            init: dict | None = None) -> dict:
    final = state.evals[-1]
    best = min(state.evals, key=lambda row: row["val_loss"])
    tokens_seen = state.history[-1]["tokens_seen"] if state.history else 0
    counts = state.model.param_counts()
    return {
        "steps": state.step,
        "final": {"val_loss": final["val_loss"], "val_perplexity": final["val_perplexity"],
                  "train_loss": final["train_loss"], "train_perplexity": final["train_perplexity"]},
        "best": {"val_loss": best["val_loss"], "val_perplexity": best["val_perplexity"], "step": best["step"]},
        "tokens_seen": tokens_seen,
        "train_time_s": state.train_time_s,
        "tokens_per_s": tokens_seen / state.train_time_s if state.train_time_s else 0.0,
        "params": {"total": counts.total, "non_embedding": counts.non_embedding},
        "peak_rss_mib": peak_rss_mib(),
        "device": device.type,
        "precision": precision,
        "world_size": world.world_size,  # training processes
        "vocabulary": vocabulary_summary(state.model),
        "init": init or {"from": SCRATCH},  # the initial weights; the step-0 evaluation shows where they start
    }


def vocabulary_summary(model: GPT | ShortlistGPT) -> dict:
    """How many rows the softmax was computed over in training (all of them without the shortlist)."""
    if not isinstance(model, ShortlistGPT):
        return {"shortlist": False, "softmax_rows": model.config.vocab_size}
    vocab = model.vocab
    return {"shortlist": True, "softmax_rows": vocab.n_rows, "seen_tokens": vocab.vocab_size - vocab.n_shared,
            "unseen_tokens": vocab.n_shared, "unseen_smoothing": model.unseen_smoothing}
