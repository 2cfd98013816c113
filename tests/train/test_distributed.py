"""Data-parallel pretraining on CPU (gloo), with real torchrun processes: two processes with half the
batch each take the steps one process takes with the whole batch; a bad batch size or a checkpoint of
another world size is refused with the fix; the processes other than rank 0 write nothing; the stage
starts itself under torchrun when train.nproc_per_node > 1."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tinygpt.core.compute import ComputeParams
from tinygpt.core.errors import TinyGptError
from tinygpt.data import tokenizer
from tinygpt.data.tokens import write_tokens
from tinygpt.model.config import GPTConfig
from tinygpt.pipeline.params import ParamsError
from tinygpt.train import distributed
from tinygpt.train.config import TrainParams
from tinygpt.train.loop import train

HERE = Path(__file__).resolve().parent
# 64 of 96 ids occur, so the compact vocabulary has its shared unseen row (and its smoothing).
TINY = GPTConfig(vocab_size=96, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
# The pipeline's recipe (Muon, input noise, the shortlist and its smoothing) on a tiny model, two micro-batches
# per step (so one gradient average of the two is skipped), one thread per process on the two cores.
RECIPE = TrainParams(max_steps=10, batch_size=8, grad_accum_steps=2, warmup_steps=2, eval_interval=5, eval_batches=2,
                     checkpoint_interval=5, compile=False, threads=1)
CPU_FP32 = ComputeParams(device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("corpus")
    cycle = np.random.default_rng(0).permutation(64)
    write_tokens(root / "train.bin", np.tile(cycle, 10))
    write_tokens(root / "val.bin", np.tile(cycle, 2))
    return root / "train.bin", root / "val.bin"


def torchrun(args: list[str], nproc: int = 2, cwd: Path | None = None, env: dict | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --standalone` with a deadline. torchrun stops its workers when it
    gets SIGTERM (they run in sessions of their own, out of reach of a kill of its group)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def train_in_two_processes(tmp_path: Path, corpus, p: TrainParams, checkpoint_root: Path,
                           crash_at: int | None = None) -> subprocess.CompletedProcess:
    spec = {"model": TINY.to_dict(), "train": dataclasses.asdict(p), "compute": dataclasses.asdict(CPU_FP32),
            "train_path": str(corpus[0]),
            "val_path": str(corpus[1]), "checkpoint_root": str(checkpoint_root), "out": str(tmp_path / "ranks.pt"),
            "crash_at": crash_at}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    return torchrun([str(HERE / "ddp_train.py"), str(tmp_path / "spec.json")])


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, corpus) -> dict:
    """One run of RECIPE in two processes of batch 4 each (train.nproc_per_node = 2)."""
    tmp_path = tmp_path_factory.mktemp("two")
    done = train_in_two_processes(tmp_path, corpus, dataclasses.replace(RECIPE, nproc_per_node=2), tmp_path / "ckpt")
    assert done.returncode == 0, done.stderr[-3000:]
    return {**torch.load(tmp_path / "ranks.pt", weights_only=True), "checkpoint_root": tmp_path / "ckpt"}


@pytest.fixture(autouse=True)
def restore_threads():
    """train() sets torch's threads (train.threads = 1); the other tests get theirs back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_two_processes_with_half_the_batch_take_the_steps_of_one(two_processes, corpus, tmp_path):
    one = train(TINY, RECIPE, corpus[0], corpus[1], tmp_path / "ckpt", compute=CPU_FP32)
    two = two_processes
    ranks = two["weights"]
    assert len(ranks) == 2 and max_abs_diff(ranks[0], ranks[1]) == 0.0  # the same update on every process

    losses_one = np.array([row["loss"] for row in one.history])
    losses_two = np.array([row["loss"] for row in two["history"]])
    assert len(losses_two) == RECIPE.max_steps and losses_one[-1] < losses_one[0] - 0.3  # it learned
    print(f"max |loss difference| {np.abs(losses_one - losses_two).max():.2e}, "
          f"max |weight difference| {max_abs_diff(one.model.state_dict(), ranks[0]):.2e}")
    np.testing.assert_allclose(losses_two, losses_one, rtol=0, atol=1e-5)
    assert max_abs_diff(one.model.state_dict(), ranks[0]) < 1e-5
    for a, b in zip(one.evals, two["evals"]):
        assert a["step"] == b["step"] and a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
    assert [r["grad_norm"] for r in two["history"]] == pytest.approx([r["grad_norm"] for r in one.history], rel=1e-4)
    assert [r["tokens_seen"] for r in two["history"]] == [r["tokens_seen"] for r in one.history]  # the global batch
    assert two["metrics"]["world_size"] == 2 and one.metrics["world_size"] == 1


def test_an_interrupted_run_resumes_with_as_many_processes_to_the_same_weights(two_processes, corpus, tmp_path):
    p = dataclasses.replace(RECIPE, nproc_per_node=2)
    crashed = train_in_two_processes(tmp_path, corpus, p, tmp_path / "ckpt", crash_at=7)  # checkpoint at 5
    assert crashed.returncode != 0 and not (tmp_path / "ranks.pt").exists()
    resumed = train_in_two_processes(tmp_path, corpus, p, tmp_path / "ckpt")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = torch.load(tmp_path / "ranks.pt", weights_only=True)
    assert again["resumed_from"] == 5
    for a, b in zip(again["weights"], two_processes["weights"]):
        assert max_abs_diff(a, b) == 0.0  # bit for bit the uninterrupted two-process run
    assert [r["loss"] for r in again["history"]] == [r["loss"] for r in two_processes["history"]]


def test_a_checkpoint_resumes_only_with_as_many_processes(two_processes, corpus, tmp_path):
    # The two-process run's checkpoint, read by one process with the same params (and so the same key).
    p = dataclasses.replace(RECIPE, nproc_per_node=2)
    with pytest.raises(TinyGptError, match=r"written by a run of 2 training process\(es\), and this run has 1; "
                                           r"rerun with the same train.nproc_per_node .* or delete .*ckpt/"):
        train(TINY, p, corpus[0], corpus[1], two_processes["checkpoint_root"], compute=CPU_FP32)

    # One process's checkpoint, met by two: both refuse it (rank 0 reads it and sends the error), none hangs.
    train(TINY, RECIPE, corpus[0], corpus[1], tmp_path / "ckpt", compute=CPU_FP32)
    done = train_in_two_processes(tmp_path, corpus, RECIPE, tmp_path / "ckpt")
    assert done.returncode != 0
    assert "written by a run of 1 training process(es), and this run has 2" in done.stderr, done.stderr[-3000:]


def test_a_batch_that_does_not_split_over_the_processes_is_refused(corpus, tmp_path):
    with pytest.raises(ParamsError, match=r"train.batch_size = 6 .* a multiple of train.nproc_per_node = 4"):
        dataclasses.replace(RECIPE, batch_size=6, nproc_per_node=4).validate()
    # Several machines: the world is larger than train.nproc_per_node. Refused before any collective.
    world = distributed.World(rank=0, world_size=3, local_rank=0, local_world_size=1)
    with pytest.raises(TinyGptError, match=r"train.batch_size = 8 does not split evenly over 3 processes.*"
                                           r"train.nproc_per_node"):
        train(TINY, RECIPE, corpus[0], corpus[1], tmp_path / "ckpt", world=world, compute=CPU_FP32)
    assert not (tmp_path / "ckpt").exists()


def test_only_rank_0_writes(tmp_path, shakespeare_path):
    """The stage under an external torchrun, each process in a copy of the project of its own: rank 0's
    folder gets the outputs, the checkpoint and the MLflow store; rank 1's is left as it was."""
    ids = np.asarray(tokenizer.encode(shakespeare_path.read_text()[:8000]))
    params = {
        "tracking": {"experiment": "test-ddp"},
        "model": {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16},
        "train": {"max_steps": 4, "batch_size": 4, "warmup_steps": 1, "eval_interval": 2, "eval_batches": 1,
                  "checkpoint_interval": 2, "compile": False, "threads": 1, "nproc_per_node": 2},
        "compute": {"device": "cpu", "precision": "fp32"},
    }
    for rank in (0, 1):
        project = tmp_path / f"rank{rank}"
        write_tokens(project / "data/split/train.bin", ids[:1500])
        write_tokens(project / "data/split/val.bin", ids[1500:])
        (project / "data/split/split.json").write_text(json.dumps({"val": {"bytes": 4000}}))
        (project / "params.yaml").write_text(yaml.safe_dump(params))
    before = {p: p.read_bytes() for p in (tmp_path / "rank1").rglob("*") if p.is_file()}
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # each folder's own store

    done = torchrun([str(HERE / "ddp_stage.py"), str(tmp_path)], env=env, timeout=180)

    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "rank0/metrics/pretrain.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 4 and metrics["tokens_seen"] == 4 * 4 * 16
    assert (tmp_path / "rank0/models/pretrain/model.safetensors").exists()
    assert (tmp_path / "rank0/mlflow.db").exists() and list((tmp_path / "rank0/.cache/pretrain").glob("*/checkpoint.pt"))
    after = {p: p.read_bytes() for p in (tmp_path / "rank1").rglob("*") if p.is_file()}
    assert after == before, f"rank 1 wrote {sorted(str(p.relative_to(tmp_path)) for p in set(after) - set(before))}"
    assert not [p for p in (tmp_path / "rank1").rglob("*") if p.is_dir() and not any(p.iterdir())]  # no new folders
    assert done.stdout.count("pretrain: 4 steps") == 1  # rank 0's summary line only


def test_launch_runs_a_module_under_torchrun_and_returns_its_exit_code(tmp_path, monkeypatch):
    (tmp_path / "probe.py").write_text(
        "import os, sys, torch\n"
        "from tinygpt.train import distributed\n"
        "with distributed.process_group('cpu') as world:\n"
        "    total = world.mean(float(world.rank + 1), torch.device('cpu'))\n"
        "    open(f'rank{world.rank}.txt', 'w').write(f\"{world.world_size} {total} {os.environ['OMP_NUM_THREADS']}\")\n"
        "sys.exit(int(os.environ['PROBE_EXIT']) if world.is_main else 0)\n")
    monkeypatch.chdir(tmp_path)
    for name in ("WORLD_SIZE", "LOCAL_RANK", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROBE_EXIT", "0")
    assert distributed.launch("probe", 2) == 0
    threads = str(distributed.cpu_share(2))  # the machine's cores shared out, not torchrun's 1 thread each
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == [f"2 1.5 {threads}"] * 2
    monkeypatch.setenv("PROBE_EXIT", "3")
    assert distributed.launch("probe", 2) != 0  # a failed process fails the stage


def test_the_stage_relaunches_itself_only_outside_torchrun(tmp_path, monkeypatch):
    from stages import pretrain as stage

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"nproc_per_node": 2}}))
    monkeypatch.chdir(tmp_path)
    for name in ("WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    launched = []
    monkeypatch.setattr(distributed, "launch", lambda module, n: launched.append((module, n)) or 5)
    with pytest.raises(SystemExit) as stopped:
        stage.main()
    assert stopped.value.code == 5 and launched == [("stages.pretrain", 2)]
    assert not distributed.needs_launch(1)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert not distributed.needs_launch(2)  # under torchrun already: it runs as one of the processes
