"""Data-parallel pretraining under torchrun: which process this is, the process group, and the stage's
relaunch of itself on one machine.

Every process draws the whole global batch from the same seeded sampler and trains on its contiguous
share, and DistributedDataParallel averages the gradients, so W processes with batch B/W each take the
step one process with batch B takes (up to float rounding). A single process (no torchrun environment)
gets `World()`, of size 1, for which every helper here is the identity and no collective ever runs.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tinygpt.core.device import resolve_device
from tinygpt.core.errors import TinyGptError

T = TypeVar("T")
# Rank 0 alone scores the val split, writes the outputs and logs to MLflow after training while the
# others wait at the final barrier: longer than NCCL's default of 10 minutes may be needed.
TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (torchrun's RANK, WORLD_SIZE, LOCAL_*)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the process's index on its machine: its GPU
    local_world_size: int = 1  # processes on this machine

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that loads and writes checkpoints, logs and writes outputs."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> World:
        env = os.environ
        size = int(env.get("WORLD_SIZE", "1"))
        return cls(rank=int(env.get("RANK", "0")), world_size=size, local_rank=int(env.get("LOCAL_RANK", "0")),
                   local_world_size=int(env.get("LOCAL_WORLD_SIZE", str(size))))

    def own_device(self, device: torch.device) -> torch.device:
        """On CUDA with several processes, this process's GPU (LOCAL_RANK); else `device` itself."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" and self.world_size > 1 else device

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise TinyGptError(
                f"train.batch_size = {batch_size} does not split evenly over {self.world_size} processes; "
                "set train.batch_size to a multiple of the world size (train.nproc_per_node times the number "
                "of nodes) or change train.nproc_per_node")

    def share(self, rows: torch.Tensor) -> torch.Tensor:
        """This process's contiguous share of a global batch."""
        if self.world_size == 1:
            return rows
        per = len(rows) // self.world_size
        return rows[self.rank * per : (self.rank + 1) * per]

    def dropout_seed(self, seed: int) -> int:
        """A torch seed of this process's own: identical dropout masks in every share of the batch would
        correlate the noise that dropout is there to add."""
        return int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])

    def mean(self, value: float, device: torch.device) -> float:
        """The mean of `value` over the processes (NCCL reduces on the GPU)."""
        if self.world_size == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return float(total.item()) / self.world_size

    def gather(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in rank order, on every process."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def from_main(self, compute: Callable[[], T]) -> T:
        """compute() on rank 0, its result sent to every process. A TinyGptError there is raised on every
        process, so none is left waiting for a result that never comes."""
        if self.world_size == 1:
            return compute()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box = [(True, compute())]
            except TinyGptError as err:
                box = [(False, str(err))]
        dist.broadcast_object_list(box, src=0)
        ok, value = box[0]
        if not ok:
            raise TinyGptError(value)
        return value


SINGLE = World()  # one process, no process group


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ or "LOCAL_RANK" in os.environ


def needs_launch(nproc_per_node: int) -> bool:
    """True when the stage must start its processes itself (train.nproc_per_node > 1, not under torchrun)."""
    return nproc_per_node > 1 and not under_torchrun()


def cpu_share(processes: int) -> int:
    """Torch threads for each of `processes` on this machine: its cores split evenly."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // processes)


def launch(module: str, nproc_per_node: int) -> int:
    """Run `python -m module` as `nproc_per_node` processes on this machine under torchrun (standalone
    rendezvous) and return its exit code. torchrun starts its workers in sessions of their own, so a stop
    reaches them only through it: SIGTERM (how DVC stops a stage) is passed on, and Ctrl-C stops it too."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               str(nproc_per_node), "-m", module]
    env = {"OMP_NUM_THREADS": str(cpu_share(nproc_per_node)), **os.environ}  # else torchrun sets 1
    process = subprocess.Popen(command, env=env)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signum))
    try:
        return process.wait()
    except BaseException:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def process_group(device_name: str) -> Iterator[World]:
    """This process's World. Under torchrun (world size > 1) the process joins the group for the duration
    (gloo on CPU, NCCL on CUDA with this process's GPU); on a clean exit every process waits for the others,
    so rank 0's last writes finish before anyone leaves. A single process joins nothing."""
    world = World.from_env()
    if world.world_size == 1:
        yield world
        return
    device = resolve_device(device_name)
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise TinyGptError(f"process {world.local_rank} of this machine has no GPU of its own "
                               f"({torch.cuda.device_count()} visible); lower train.nproc_per_node "
                               "(or torchrun's --nproc-per-node) to the number of GPUs")
        torch.cuda.set_device(world.local_rank)
    elif device.type != "cpu":
        raise TinyGptError(f"compute.device = {device_name!r} resolves to {device.type}, which data-parallel "
                           "training does not support; set compute.device: cpu or cuda")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    try:
        yield world
        dist.barrier()
    finally:
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, device: torch.device, world: World) -> DistributedDataParallel | None:
    """The model under DistributedDataParallel (it averages the gradients), or None for one process.
    Buffers are constants built the same way on every process: no need to broadcast them every step."""
    if world.world_size == 1:
        return None
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   broadcast_buffers=False)


def syncing(ddp: DistributedDataParallel | None, last_micro_batch: bool):
    """Gradients are averaged once per optimizer step: on the last micro-batch, not on the others."""
    return ddp.no_sync() if ddp is not None and not last_micro_batch else nullcontext()
