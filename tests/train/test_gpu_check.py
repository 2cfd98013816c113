"""benchmarks/gpu_check.py keeps working without a GPU: it refuses to run with status 2 where CUDA is
absent, and its hidden `--device cpu --tiny` mode runs both phases (the library's training loop on the
corpus it tokenizes, then a GPT-2-shaped model) and stops a phase when the budget is spent; its report
leaves the warm-up steps out of tokens/s and divides the model's FLOP/s by the GPU's peak."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from tinygpt.core.compute import ComputeParams
from tinygpt.model.config import GPTConfig
from tinygpt.train.config import TrainParams
from tinygpt.train.flops import GpuPeak

SCRIPT = "benchmarks/gpu_check.py"


def gpu_check(repo_root, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=repo_root, capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.fixture
def corpus(tmp_path, shakespeare_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(shakespeare_path.read_bytes()[:40_000])
    return path


def test_without_cuda_it_exits_2_and_says_why(repo_root):
    done = gpu_check(repo_root, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2
    assert "no CUDA device; this check needs a GPU" in done.stderr
    assert done.stdout == ""


def test_tiny_cpu_run_covers_both_phases(repo_root, corpus, tmp_path):
    out = tmp_path / "summary.json"
    done = gpu_check(repo_root, "--device", "cpu", "--tiny", "--corpus", str(corpus), "--out", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())
    pretrain, gpt2 = summary["phases"]
    assert summary["data"] == str(corpus) and summary["peak_flops"] is None
    for phase, steps in ((pretrain, 6), (gpt2, 4)):
        assert phase["status"] == "complete"
        assert phase["steps"] == phase["max_steps"] == steps
        assert phase["val_loss_step"] == steps  # the evaluation after the last step
        # Barely trained: near the uniform distribution's ln 50257 = 10.82 nats.
        assert 9.0 < phase["val_loss"] < 12.0
        assert phase["tokens_per_s"] > 0 and phase["mfu"] is None  # no peak for a CPU
    # The shortlist head of 40 kB of Shakespeare has a few thousand rows; gpt2 trains over all 50,257.
    assert 1_000 < pretrain["model"]["softmax_rows"] < 5_000
    assert gpt2["model"]["softmax_rows"] == 50257 and gpt2["seq_len"] == 32 and gpt2["precision"] == "bf16"
    # The tiny gpt2 (2 layers, 2 heads, 32 wide, 32 tokens): per block 12 x 32^2 + 13 x 32 = 12,704, twice,
    # + the final LayerNorm 64 + the 50,257 x 32 head = 1,633,696 = N; 6N + 12 x 2 x 32 x 32.
    assert gpt2["flops_per_token"] == 6 * 1_633_696 + 24_576
    table = done.stdout.split("\n\n")[-1]
    assert table.splitlines()[0].split()[:3] == ["phase", "status", "steps"]
    assert "pretrain  complete  6/6" in table and "gpt2      complete  4/4" in table


def test_a_spent_budget_stops_pretraining_after_one_step_and_skips_gpt2(repo_root, corpus, tmp_path):
    out = tmp_path / "summary.json"
    done = gpu_check(repo_root, "--device", "cpu", "--tiny", "--corpus", str(corpus), "--budget-s", "0",
                     "--out", str(out))
    assert done.returncode == 0, done.stderr
    pretrain, gpt2 = json.loads(out.read_text())["phases"]
    assert pretrain["status"] == "stopped: budget spent" and pretrain["steps"] == 1
    assert pretrain["val_loss_step"] == 0 and math.isfinite(pretrain["val_loss"])  # the only evaluation done
    assert gpt2 == {"phase": "gpt2", "status": "skipped: budget spent", "steps": 0, "max_steps": 4}


def load_script(repo_root, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", repo_root / SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_report_leaves_out_the_warm_up_steps_and_divides_by_the_peak(repo_root, monkeypatch):
    check = load_script(repo_root, monkeypatch)
    config = GPTConfig(vocab_size=10, block_size=4, n_layer=1, n_head=2, n_embd=4)  # 1,944 FLOPs a token
    phase = check.Phase("pretrain", config, TrainParams(max_steps=30, batch_size=2), ComputeParams("cpu"), softmax_rows=10)
    recorder = check.Recorder(deadline=float("inf"), max_steps=30)
    for step in range(1, 31):  # ten slow steps (compiling), then 1,000 ... 20,000 tokens/s
        recorder(step, {"loss": 1.0, "tokens_per_s": 4.0 if step <= 10 else 1000.0 * (step - 10)})
    recorder(30, {"val_loss": 2.5, "train_loss": 2.4})
    report = check.phase_report(phase, recorder, "complete", 12.0, torch.device("cpu"), GpuPeak("test", 1e8))
    assert report["tokens_per_s"] == 10_500  # the median of 1,000 ... 20,000
    assert report["first_step_s"] == 2.0  # 2 x 4 tokens at 4 tokens/s
    assert report["mfu"] == pytest.approx(10_500 * 1944 / 1e8)
    assert (report["val_loss"], report["val_loss_step"]) == (2.5, 30)
    assert "20.4%" in check.table([report])
