"""PPO and DPO from three training seeds each against one best-of-n curve (issue 35).

The files here come from one run of the upstream stages (pretrained and reward models, prompts, best-of-n's
samples) and three runs of rlhf and dpo on them with rlhf.seed = dpo.seed = 1337, 7, 42: each run's
report-set samples of its reported point (text dropped), its metrics and its evaluations (*_frontier.csv),
best-of-n per prompt and its curve. dpo_rep4_*: dpo again on the same upstream outputs with
dpo.repetition_penalty = 4 (docs/experiments.md, "DPO's pairs ranked with a repetition term").
Errors: a bootstrap over the 128 report prompts and, for the pooled rows, over the three seeds too.
Text quality: each run's own, then its change from the reference minus best-of-n's at its KL (no error).
Run from the repository root: python docs/experiments/frontier_seeds/summary.py"""
import json
from pathlib import Path

import numpy as np
import pandas as pd

from tinygpt.rlhf.best_of_n import against_best_of_n, bootstrap_mean_se

HERE = Path(__file__).parent
SEEDS = (1337, 7, 42)
GOLDS = ("gold", "heldout_gold")  # VADER (the oracle the preferences came from), AFINN-165 (nothing saw it)
QUALITY = ("repeated_words", "distinct_2", "unseen_words")

per_prompt = pd.read_csv(HERE / "best_of_n_per_prompt.csv")
curves = {name: per_prompt[per_prompt["set"] == name] for name in ("report", "report_deep")}
curve = pd.read_csv(HERE / "best_of_n_curve.csv")
reference = curves["report"][curves["report"]["n"] == 1].sort_values("prompt")  # the 64 samples' mean


def run(method: str, seed: int) -> dict:
    samples = pd.read_csv(HERE / f"{method}_seed{seed}_samples.csv")
    by_prompt = samples.groupby("prompt")
    metrics = json.loads((HERE / f"{method}_seed{seed}.json").read_text())
    return {"policy": {g: by_prompt[g].mean().to_numpy() for g in GOLDS}, "kl": float(samples["kl"].mean()),
            "step": metrics["selected_step"], "quality": metrics["quality"]["after"],
            "reference_quality": metrics["quality"]["before"],
            "ppl": metrics["change"]["val_perplexity_relative"]}


def row(label: str, runs: list[dict]) -> dict:
    policy = {g: np.stack([r["policy"][g] for r in runs]) for g in GOLDS}  # (seeds, prompts)
    kls = np.array([r["kl"] for r in runs])
    gap = against_best_of_n(kls, policy, curves)
    out = {"": label, "KL": f"{kls.mean():.2f}"}
    for g, name in zip(GOLDS, ("VADER", "AFINN")):
        gain = policy[g] - reference[g].to_numpy()
        out[f"{name} gain"] = f"{gain.mean():+.3f} ± {bootstrap_mean_se(gain):.3f}"
        prefix = "" if g == "gold" else "heldout_"
        out[f"− best-of-n, {name}"] = (f"{gap[f'{prefix}gain_over_best_of_n']:+.3f} ± "
                                        f"{gap[f'{prefix}gain_over_best_of_n_se']:.3f}")
    out["curve (prompts)"] = f"{gap['best_of_n_curve']} ({gap['best_of_n_prompts']})"
    for q in QUALITY:
        out[q] = f"{np.mean([r['quality'][q] for r in runs]):.3f}"  # text, so that every row keeps 3 digits
        out[f"{q} − best-of-n"] = f"{quality_over_best_of_n(q, runs, gap['best_of_n_curve']):+.3f}"
    out["val ppl"] = f"{np.mean([r['ppl'] for r in runs]):+.1%}"
    return out


def quality_over_best_of_n(q: str, runs: list[dict], name: str) -> float:
    """The policy's change of `q` from the reference (every report prompt) minus best-of-n's at its KL (the
    curve's prompts), mean over the runs: the frontier's `{q}_change_over_best_of_n`, which is linear in the
    per-prompt means, so the policy's and the reference's means suffice (the texts, and with them a
    bootstrap error, were dropped from these files; the pipeline's run has its error)."""
    c = curve[curve["set"] == name]
    return float(np.mean([(r["quality"][q] - r["reference_quality"][q])
                          - (np.interp(r["kl"], c["kl"], c[q]) - c[q].iloc[0]) for r in runs]))


rows = []
for method, stage in (("PPO", "ppo"), ("DPO", "dpo"), ("DPO, repetition term 4", "dpo_rep4")):
    runs = {seed: run(stage, seed) for seed in SEEDS}
    rows += [row(f"{method} seed {seed} (step {r['step']})", [r]) for seed, r in runs.items()]
    rows.append(row(f"**{method}, 3 seeds**", list(runs.values())))
print(pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True))
print()
deep = curve[curve["set"] == "report_deep"].astype({"n": str, "prompts": str})
print(deep[["n", "prompts", "kl", "gold_gain", "gold_gain_se", "heldout_gold_gain", "heldout_gold_gain_se", *QUALITY]]
      .to_markdown(index=False, floatfmt=".3f"))
