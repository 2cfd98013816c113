"""Helpers the tests share (plain functions and constants; the fixtures are in conftest.py): copies of the
project run under real `dvc`, the tiny pipeline configuration, a training interruption, dvc.yaml paths."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

# A pipeline small enough to run in a minute or two on a laptop CPU.
TINY_PIPELINE = {
    # 64 tokens: the sft stage needs dialogue pairs that fit (126 train, 8 val pairs in the first 40 kB)
    "model": {"block_size": 64, "n_layer": 1, "n_head": 2, "n_embd": 32},
    "train": {"max_steps": 6, "batch_size": 2, "warmup_steps": 2, "eval_interval": 3, "eval_batches": 1,
              "checkpoint_interval": 3, "compile": False},
    "eval": {"batch_size": 8, "stride": 16, "train_tokens": 256, "train_segments": 2, "prompts": ["ROMEO:"],
             "sample_max_new_tokens": 4},
    "compare": {"pretrained": "missing-gpt2-dir/", "allow_download": False, "fidelity_tokens": 256,
                "speed_batch_size": 1, "speed_pretrained": False},
    # Enough continuations that some carry a VADER word: a 6-step model samples nearly at random, and a
    # split whose pairs all tie is (rightly) an error.
    "preferences": {"train_prompts": 8, "val_prompts": 8, "selection_prompts": 4, "samples_per_prompt": 4,
                    "prompt_tokens": 4,
                    "continuation_tokens": 11, "batch_size": 16},
    "sft": {"batch_size": 32, "eval_interval": 2, "samples": 2, "max_new_tokens": 4},
    "reward": {"epochs": 1, "batch_size": 4, "warmup_steps": 1},
    "heldout": {"samples_per_prompt": 1, "batch_size": 16},
    "best_of_n": {"max_n": 4, "deep_n": 8, "deep_prompts": 2},
    "rlhf": {"steps": 2, "batch_size": 4, "minibatch_size": 2, "ppo_epochs": 1},
    "dpo": {"ranked_samples": 4, "ranked_pairs": 2, "batch_size": 8, "eval_interval": 1},
}


def project_files(repo_root: Path) -> list[str]:
    """Tracked files plus new files git does not ignore: what a clean clone of this work tree holds."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=repo_root, capture_output=True, text=True, check=True,
    )
    return [f for f in out.stdout.splitlines() if (repo_root / f).is_file()]


def copy_project(repo_root: Path, dest: Path) -> Path:
    for name in project_files(repo_root):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo_root / name, target)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dest, check=True)
    return dest


def commit_all(project: Path, message: str) -> None:
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", message], cwd=project, check=True)


def tiny_copy(root: Path, corpus_file: Path) -> Path:
    """A copy of this project in `root`/project with the tiny configuration, committed, reading the first
    40 kB of `corpus_file` (saved as `root`/corpus.txt)."""
    corpus = corpus_file.read_bytes()[:40_000]
    (root / "corpus.txt").write_bytes(corpus)
    project = copy_project(REPO_ROOT, root / "project")
    data = {"url": str(root / "corpus.txt"), "sha256": hashlib.sha256(corpus).hexdigest(), "mirrors": []}
    set_params(project, data=data, **TINY_PIPELINE)
    commit_all(project, "tiny configuration")
    return project


def copy_finished(finished: Path, dest: Path) -> Path:
    """A private copy of the `finished_project` fixture (its git history, DVC cache and MLflow store too)."""
    shutil.copytree(finished, dest, symlinks=True)
    return dest


def set_params(project: Path, **sections) -> None:
    path = project / "params.yaml"
    values = yaml.safe_load(path.read_text())
    for section, keys in sections.items():
        values.setdefault(section, {}).update(keys)
    path.write_text(yaml.safe_dump(values, sort_keys=False))


def dvc(project: Path, *args: str, check: bool = True,
        env_vars: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run dvc in `project` (its stages import the copy's own src/: stages/__init__.py). `env_vars` are set
    for dvc and its stages (e.g. MLFLOW_TRACKING_URI; unset, the stages log to <project>/mlflow.db)."""
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]  # stages run this python
    env.update(env_vars or {})
    # Output goes through files, not pipes: `dvc queue start` exits at once, but the workers it leaves
    # running inherit its stdout, and reading a pipe would wait for them (seen once in CI: 600 s).
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        returncode = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=project, env=env,
                                    stdout=stdout, stderr=stderr, text=True, timeout=600).returncode
        stdout.seek(0)
        stderr.seek(0)
        out = subprocess.CompletedProcess(args, returncode, stdout.read(), stderr.read())
    if check:
        assert out.returncode == 0, f"dvc {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out


def run_queue(project: Path, workers: int = 1, timeout_s: float = 1200, env_vars: dict[str, str] | None = None) -> str:
    """Start `workers` queue workers, wait until nothing is queued or running, and return the last
    `dvc queue status`; past the deadline, kill what still runs and fail."""
    dvc(project, "queue", "start", "-j", str(workers), env_vars=env_vars)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        time.sleep(8)  # each `dvc queue status` costs a second of CPU, taken from the workers
        status = dvc(project, "queue", "status", env_vars=env_vars).stdout
        if "Queued" not in status and "Running" not in status:
            return status
    dvc(project, "queue", "stop", "--kill", env_vars=env_vars, check=False)
    raise AssertionError(f"the queue did not finish in {timeout_s:.0f} s:\n{status}")


def failed_names(status: str) -> list[str]:
    """The names of the failed tasks in a `dvc queue status` table."""
    return re.findall(r"^\w+\s+(\S+)\s.*\bFailed\s*$", status, flags=re.M)


def failed_in_a_stage(log: str) -> bool:
    """Whether a failed queued experiment's log shows one of the pipeline's stages failing (DVC prints
    "failed to reproduce" for it), rather than DVC's queue failing around the stages."""
    return "failed to reproduce" in log or "Traceback" in log


def run_queued(project: Path, experiments: dict[str, list[str]], workers: int = 2,
               env_vars: dict[str, str] | None = None) -> str:
    """Queue each experiment (`dvc exp run --queue -n NAME *ARGS`), run them on `workers` workers and
    return the last `dvc queue status`, every experiment a success.

    DVC's queue with several workers sometimes fails a task in its own set-up or collection, with no
    stage at fault (treeverse/dvc#10673, open): such an experiment is queued and run once more (said on
    stdout). An experiment failed by a stage fails the test, with its log and the workers' logs."""
    def queue(names):
        for name in names:
            dvc(project, "exp", "run", "--queue", "-n", name, *experiments[name], env_vars=env_vars)

    queue(experiments)
    status = run_queue(project, workers=workers, env_vars=env_vars)
    failed = failed_names(status)
    if failed:
        logs = {name: dvc(project, "queue", "logs", name, env_vars=env_vars, check=False) for name in failed}
        report = "\n".join(f"--- dvc queue logs {name}:\n{tail(out.stdout + out.stderr)}" for name, out in logs.items())
        workers_log = "\n".join(f"--- {path.name}:\n{tail(path.read_text(errors='replace'), 30)}"
                                 for path in sorted((project / ".dvc/tmp/exps/celery").glob("*.out")))
        assert not any(failed_in_a_stage(out.stdout + out.stderr) for out in logs.values()), \
            f"queued experiment(s) failed in a stage:\n{status}\n{report}\n{workers_log}"
        print(f"DVC's queue failed {failed} outside any stage; run once more:\n{report}\n{workers_log}")
        dvc(project, "queue", "remove", *failed, env_vars=env_vars)
        queue(failed)
        status = run_queue(project, workers=workers, env_vars=env_vars)
    for name in experiments:
        assert re.search(rf"\b{re.escape(name)}\b.*Success", status), status
    return status


def tail(text: str, lines: int = 80) -> str:
    return "\n".join(text.splitlines()[-lines:])


class Interrupted(Exception):
    pass


def crash_at(crash_step: int):
    """A step callback that interrupts training right after optimizer step `crash_step` is logged."""
    def on_step(step, metrics):
        if step == crash_step and "loss" in metrics:
            raise Interrupted
    return on_step


def declared_paths(entries: list) -> list[str]:
    """The paths of a dvc.yaml outs/metrics/plots list, whose items are a path or {path: options}."""
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


@dataclass
class Tokenized:
    """A string (or several documents) run through the tokenize stage's code, read back into memory."""

    tokens: np.ndarray
    byte_offsets: np.ndarray
    char_offsets: np.ndarray
    documents: np.ndarray  # index of each document's first token, then the total
    n_chars: int
    n_bytes: int
    files: object  # the TokenFiles it was written to


def tokenize_text(text: str | list[str], **options) -> Tokenized:
    """tokenize_corpus on a temp copy of `text` (a list: one document each)."""
    from tinygpt.data import tokenizer
    from tinygpt.data.corpus_tokens import TokenFiles, tokenize_corpus
    from tinygpt.data.tokens import read_document_index, read_offsets, read_tokens

    documents = [text] if isinstance(text, str) else text
    encoded = [d.encode("utf-8") for d in documents]
    folder = Path(tempfile.mkdtemp(prefix="tokenized-"))
    (folder / "input.txt").write_bytes(b"".join(encoded))
    starts = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64)
    files = TokenFiles(folder / "tokens.bin", folder / "offsets.npy", folder / "documents.npy")
    summary = tokenize_corpus(folder / "input.txt", starts, tokenizer.gpt2_encoding(), files, progress=False, **options)
    byte_offsets, char_offsets = read_offsets(files.offsets)
    return Tokenized(np.array(read_tokens(files.tokens, summary.dtype)), byte_offsets, char_offsets,
                     read_document_index(files.documents, "tokenize"), summary.characters, summary.bytes, files)


def tiny_gpt():
    """A one-layer GPT with the GPT-2 vocabulary (a Hugging Face export needs the tokenizer's every id)."""
    import torch

    from tinygpt.model.config import GPTConfig
    from tinygpt.model.gpt import GPT

    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50257, block_size=16, n_layer=1, n_head=2, n_embd=8)).eval()


def model_dirs_of(model, root: Path) -> Path:
    """`model` saved in our format (root/ours) and exported as a Hugging Face directory (root/hf)."""
    from tinygpt.model import hf, weights

    weights.save_model(model, root / "ours")
    hf.export_hf_dir(model, root / "hf")
    return root


def fake_hub_repo(cache: Path, repo_id: str, files: dict[str, bytes], repo_type: str = "model",
                  lfs: tuple[str, ...] = (".safetensors", ".parquet")) -> Path:
    """A repo laid out in a Hugging Face cache as huggingface_hub leaves it after a download: each file
    as blobs/<its sha256 (LFS files) or git blob sha1>, linked from snapshots/<commit>/, refs/main naming
    the commit. Returns the snapshot folder."""
    repo_dir = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    for name, content in files.items():
        if name.endswith(lfs):
            blob = hashlib.sha256(content).hexdigest()
        else:
            blob = hashlib.sha1(f"blob {len(content)}\0".encode() + content).hexdigest()
        (repo_dir / "blobs" / blob).write_bytes(content)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(repo_dir / "blobs" / blob, link.parent))
    return snapshot
