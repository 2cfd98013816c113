"""What the CLI knows about a MODEL argument: the directory it names (a path, or an MLflow model URI),
the metrics that came with it, and a description of it for `tinygpt info`."""
from __future__ import annotations

import json
from pathlib import Path

from tinygpt.core.errors import TinyGptError
from tinygpt.core.io import lookup
from tinygpt.model.gpt import GPT
from tinygpt.model.loading import load_trunk, model_format
from tinygpt.pipeline import paths
from tinygpt.pipeline.model_uri import model_dir

OWN_METRICS_FILE = "metrics.json"  # carried inside a registered MLflow model's directory
# The pipeline's model directories and the stage whose metrics file describes each.
STAGE_OF_DIR = {paths.PRETRAIN_DIR: "pretrain", paths.SFT_DIR: "sft", paths.RLHF_DIR: "rlhf", paths.DPO_DIR: "dpo",
                paths.REWARD_DIR: "reward", paths.HF_DIR: "compare"}
# The few numbers `info` shows of a stage's metrics (each stage has some of them; --json shows all).
HEADLINES = ("whole_val.loss", "whole_val.perplexity", "ours.val.loss", "ours.val.perplexity",
             "report.accuracy", "change.oracle_mean", "after.kl_mean", "change.val_perplexity_relative")
FORMAT_NAMES = {
    "tinygpt": "tinygpt model directory (model.safetensors + config.json)",
    "huggingface": "Hugging Face GPT-2 directory",
    "reward": "reward model (GPT trunk + scalar head; a scorer, not a language model)",
}


def metrics_path(directory: Path) -> Path | None:
    """The metrics that describe `directory`: its own metrics.json, else its stage's metrics file."""
    if (directory / OWN_METRICS_FILE).is_file():
        return directory / OWN_METRICS_FILE
    stages = [stage for d, stage in STAGE_OF_DIR.items() if d.resolve() == directory.resolve()]
    if stages and paths.metrics_file(stages[0]).is_file():
        return paths.metrics_file(stages[0])
    return None


def read_metrics(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TinyGptError(f"{path}: not valid JSON ({err}); rerun the stage that writes it") from err


def parameter_counts(gpt: GPT, head=None) -> dict[str, int]:
    """Each tensor once (the tied LM head is the token embedding) and the same without the token and
    position embeddings; a reward model's head is added to both."""
    counts = gpt.param_counts().to_dict()
    if head is not None:
        counts["head"] = sum(p.numel() for p in head.parameters())
        counts["total"] += counts["head"]
        counts["non_embedding"] += counts["head"]
    return counts


def load_counts(directory: Path, kind: str) -> tuple[dict, dict[str, int]]:
    """The architecture (config) and the parameter counts of the model in `directory`."""
    if kind == "reward":
        from tinygpt.rlhf.reward_model import load_reward_model  # pandas and datasets: only this format

        reward = load_reward_model(directory)
        return reward.gpt.config.to_dict(), parameter_counts(reward.gpt, reward.head)
    gpt = load_trunk(directory, kind)
    return gpt.config.to_dict(), parameter_counts(gpt)


def describe(model: str) -> dict:
    """Everything `tinygpt info` reports about MODEL, as plain JSON-able values."""
    directory = model_dir(model)
    kind = model_format(directory)
    config, counts = load_counts(directory, kind)
    source = metrics_path(directory)
    return {
        "model": model, "directory": str(directory), "format": kind, "architecture": config,
        "parameters": counts,
        "files": {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()},
        "metrics_file": None if source is None else str(source),
        "metrics": None if source is None else read_metrics(source),
    }


def info_text(info: dict) -> str:
    """`describe`'s result for a reader: a few lines, the metrics' headline numbers only."""
    arch, counts = info["architecture"], info["parameters"]
    shape = ", ".join(f"{k} {arch[k]}" for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"))
    head = f", of which {counts['head']:,} in the reward head" if "head" in counts else ""
    lines = [
        f"{info['model']}: {FORMAT_NAMES[info['format']]}",
        f"architecture: {shape}",
        f"parameters: {counts['total']:,} (every tensor once: the LM head is the tied token embedding{head}); "
        f"{counts['non_embedding']:,} without the token and position embeddings",
        f"size: {size_text(sum(info['files'].values()))} in {len(info['files'])} files ("
        + ", ".join(f"{name} {size_text(n)}" for name, n in info["files"].items()) + ")",
        metrics_line(info["metrics_file"], info["metrics"]),
    ]
    return "\n".join(lines)


def size_text(n_bytes: int) -> str:
    if n_bytes < 1024:
        return f"{n_bytes} B"
    return f"{n_bytes / 1024:.1f} KiB" if n_bytes < 2**20 else f"{n_bytes / 2**20:.1f} MiB"


def metrics_line(source: str | None, metrics: dict | None) -> str:
    if source is None:
        return "metrics: none found (neither metrics.json in the directory nor its stage's metrics file)"
    shown = [(key, lookup(metrics, key)) for key in HEADLINES]
    shown = ", ".join(f"{key} {value:.4g}" for key, value in shown if isinstance(value, (int, float)))
    return f"metrics ({source}): {shown or 'no headline values; see --json'}"
