"""CI's checks of a fresh `dvc repro` against the committed metrics, and of a stage rerun byte for byte.

    python -m tinygpt.pipeline.reproduce metrics [--against HEAD]   # headline metrics, table + tolerance check
    python -m tinygpt.pipeline.reproduce outs evaluate               # the stage's output hashes from dvc.lock (JSON)
    python -m tinygpt.pipeline.reproduce times [--against HEAD]      # every stage's time profile, one table

Training differs slightly between CPU models (bf16 autocast on AMX / AVX512-BF16 CPUs, fp32 elsewhere,
different kernels), so a rerun agrees with the committed numbers within tolerances, not exactly. Each
tolerance below is set from measured spread (docs in the README, "What CI checks"); counts that do not
depend on floating point (tokens, pairs) must match exactly.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from tinygpt.core.errors import TinyGptError
from tinygpt.pipeline.paths import metrics_file
from tinygpt.core.io import lookup


@dataclass(frozen=True)
class Check:
    """One headline number: where it lives and how far a rerun on another CPU may move it."""

    label: str
    stage: str
    key: str  # dotted path inside metrics/<stage>.json
    tolerance: float  # absolute; 0 = exact


CHECKS: tuple[Check, ...] = (
    Check("corpus tokens", "tokenize", "tokens", 0),
    Check("distinct tokens", "tokenize", "distinct_tokens", 0),
    Check("train tokens", "split", "train.tokens", 0),
    Check("val tokens", "split", "val.tokens", 0),
    # Measured: 4.554 fp32 on an AVX2-only EPYC (the committed run) and 4.542 bf16 on an AMX Xeon, same
    # params; seeds 1337 / 7 / 42 gave 4.542 / 4.546 / 4.534. The CPU moves it by about one seed's spread.
    Check("pretrain whole-val loss (nats/token)", "pretrain", "whole_val.loss", 0.03),
    Check("evaluate val loss, stride 64", "evaluate", "val.loss", 0.03),  # 4.545 fp32, 4.532 bf16
    Check("evaluate ECE", "evaluate", "calibration.ece", 0.01),  # 0.028 fp32, 0.026 bf16
    # Our GPT against its Hugging Face export, both fp32: agreement to float rounding on any CPU.
    Check("max abs logit difference, ours vs transformers", "compare", "fidelity.max_abs_logit_diff", 1e-4),
    # SFT finetunes the pretrained model: its reply NLL moves with it (one run measured; the pretrain loss's
    # own tolerance, plus the finetuning's); the share of 32 sampled replies that end moves by a few samples.
    Check("SFT report-set reply NLL (nats/token)", "sft", "after.report.nll", 0.05),
    Check("SFT sampled replies that end where a speech ends", "sft", "after.replies.ended_share", 0.15),
    # The RLHF stages amplify small differences: held-out pair accuracy 0.72 fp32 / 0.70 bf16. PPO's
    # report-set gain over seeds 1337 / 7 / 42 on one machine: +0.392 / +0.353 / +0.367 at KL ~5.0; another
    # CPU may select another evaluated step (docs/experiments.md, "RLHF against best-of-n").
    Check("reward model report-set pair accuracy", "reward", "report.accuracy", 0.05),
    Check("RLHF gold (VADER) gain", "rlhf", "change.oracle_mean", 0.15),
    Check("RLHF KL to the reference (nats)", "rlhf", "after.kl_mean", 2.5),
    Check("RLHF val perplexity change (relative)", "rlhf", "change.val_perplexity_relative", 0.05),
    # Best-of-16 reranks the same reference samples: it moves only with the reward model.
    Check("best-of-16 gold gain, report set", "best_of_n", "report.16.gold_gain", 0.08),
    Check("DPO gold (VADER) gain", "dpo", "change.oracle_mean", 0.15),
    Check("DPO KL to the reference (nats)", "dpo", "after.kl_mean", 2.5),
)


def committed_metrics(stage: str, revision: str) -> dict:
    """metrics/<stage>.json as committed at `revision` (git show), before a rerun overwrote it."""
    path = metrics_file(stage).as_posix()
    out = subprocess.run(["git", "show", f"{revision}:{path}"], capture_output=True, text=True)
    if out.returncode != 0:
        raise TinyGptError(f"{path} is not committed at {revision}: commit the metrics of a full `dvc repro`")
    return json.loads(out.stdout)


@dataclass
class Row:
    check: Check
    committed: float | None
    fresh: float | None

    @property
    def ok(self) -> bool:
        if self.committed is None or self.fresh is None:
            return False
        return abs(self.fresh - self.committed) <= self.check.tolerance + 1e-12


def compare(committed: dict[str, dict], fresh: dict[str, dict], checks: tuple[Check, ...] = CHECKS) -> list[Row]:
    """One row per check: the committed value, this run's, and whether they agree within tolerance."""
    return [Row(c, lookup(committed.get(c.stage, {}), c.key), lookup(fresh.get(c.stage, {}), c.key)) for c in checks]


def table(rows: list[Row]) -> str:
    def number(value: float | None) -> str:
        return "missing" if value is None else f"{value:,.6g}"

    lines = ["| metric | file | committed | this run | change | tolerance | ok |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        change = "" if r.committed is None or r.fresh is None else f"{r.fresh - r.committed:+.3g}"
        lines.append(f"| {r.check.label} | {metrics_file(r.check.stage).as_posix()}: {r.check.key} | "
                     f"{number(r.committed)} | {number(r.fresh)} | {change} | "
                     f"{'exact' if r.check.tolerance == 0 else f'±{r.check.tolerance:g}'} | {'yes' if r.ok else 'NO'} |")
    return "\n".join(lines)


def stage_out_hashes(stage: str, lock_path: Path = Path("dvc.lock")) -> dict[str, str]:
    """path -> md5 of a stage's outs in dvc.lock, metrics excluded (they carry run ids and times)."""
    stages = yaml.safe_load(lock_path.read_text())["stages"]
    if stage not in stages:
        raise TinyGptError(f"{lock_path}: no stage '{stage}'; run `dvc repro {stage}` first")
    metrics = {metrics_file(stage).as_posix()}
    return {o["path"]: o["md5"] for o in stages[stage].get("outs", []) if o["path"] not in metrics}


def cmd_metrics(args: argparse.Namespace) -> int:
    stages = sorted({c.stage for c in CHECKS})
    committed = {s: committed_metrics(s, args.against) for s in stages}
    fresh = {s: json.loads(metrics_file(s).read_text()) for s in stages}
    rows = compare(committed, fresh)
    print(table(rows))
    failed = [r.check.label for r in rows if not r.ok]
    if failed:
        print(f"error: outside tolerance against {args.against}: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


# Every stage of dvc.yaml, in pipeline order (the report has no metrics of its own time).
TIMED_STAGES = ("check_params", "download", "tokenize", "split", "pretrain", "evaluate", "compare", "sft",
                "preferences", "reward", "best_of_n", "rlhf", "dpo", "frontier")


def stage_times(metrics: dict) -> dict[str, float]:
    """A stage's time profile (`time`), phase -> seconds; from metrics written before the profile
    existed, only the total (`wall_seconds`)."""
    if "time" in metrics:
        return {k.removesuffix("_s"): v for k, v in metrics["time"].items()}
    return {"total": metrics["wall_seconds"]} if "wall_seconds" in metrics else {}


def times_table(profiles: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]] | None = None) -> str:
    """Markdown: one row per stage, one column per phase; with a baseline, its totals beside this run's."""
    phases = [p for p in dict.fromkeys(k for prof in profiles.values() for k in prof) if p != "total"]
    head = ["stage", *phases, "total"] + (["baseline total", "ratio"] if baseline is not None else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for stage, prof in profiles.items():
        cells = [stage, *(f"{prof[p]:.1f}" if p in prof else "" for p in [*phases, "total"])]
        if baseline is not None:
            before, now = baseline.get(stage, {}).get("total"), prof.get("total")
            cells += [f"{before:.1f}" if before else "", f"{now / before:.2f}" if before and now else ""]
        lines.append("| " + " | ".join(cells) + " |")
    total = sum(prof.get("total", 0) for prof in profiles.values())
    row = ["all", *[""] * len(phases), f"{total:.1f}"]
    if baseline is not None:
        before = sum(b.get("total", 0) for b in baseline.values())
        row += [f"{before:.1f}", f"{total / before:.2f}" if before else ""]
    lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def cmd_times(args: argparse.Namespace) -> int:
    profiles = {s: stage_times(json.loads(metrics_file(s).read_text())) for s in TIMED_STAGES
                if metrics_file(s).exists()}
    baseline = None
    if args.against:
        baseline = {}
        for stage in profiles:
            try:
                baseline[stage] = stage_times(committed_metrics(stage, args.against))
            except TinyGptError:
                baseline[stage] = {}
    print(times_table(profiles, baseline))
    return 0


def cmd_outs(args: argparse.Namespace) -> int:
    print(json.dumps(stage_out_hashes(args.stage), indent=2, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinygpt.pipeline.reproduce", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    metrics = commands.add_parser("metrics", help="compare the headline metrics with a commit's")
    metrics.add_argument("--against", default="HEAD", help="git revision holding the reference metrics")
    metrics.set_defaults(handler=cmd_metrics)
    times = commands.add_parser("times", help="print every stage's time profile (seconds per phase) as a table")
    times.add_argument("--against", help="git revision whose stage totals to show beside (and the ratio)")
    times.set_defaults(handler=cmd_times)
    outs = commands.add_parser("outs", help="print a stage's output hashes from dvc.lock")
    outs.add_argument("stage")
    outs.set_defaults(handler=cmd_outs)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except TinyGptError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
