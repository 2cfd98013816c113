"""Gold score against KL: where a finetuned policy stands next to best-of-n (Gao et al. 2023).

A finetuning run is evaluated on both held-out sets at several points; each point is (KL from the
reference, gold gain, proxy gain, perplexity change). The point a run reports is chosen on the
selection set only, within a KL and a perplexity budget; the report set's numbers at that point are the
headline, so the choice cannot flatter them.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from tinygpt.core import figures, timing
from tinygpt.eval.text_quality import QUALITY, quality_values
from tinygpt.model.gpt import GPT
from tinygpt.rlhf.best_of_n import gain_at
from tinygpt.rlhf.heldout import EvalTask, Evaluation, change, evaluate_policy


def frontier_rows(step: int, reference: Evaluation, evaluation: Evaluation, known: frozenset[str]) -> list[dict]:
    """One row per held-out set for the policy at `step`: its gains against the reference, and the text
    quality of its continuations (eval.text_quality; `known`: the train split's words)."""
    rows = []
    for name, held_out in evaluation.sets.items():
        gains = change(reference, evaluation, name)
        row = {
            "step": step, "set": name,
            "kl": gains["kl_mean"], "kl_se": held_out.metrics()["kl_se"],
            "gold": float(held_out.gold.mean()), "gold_gain": gains["oracle_mean"], "gold_gain_se": gains["oracle_se"],
            "proxy_gain": gains["reward_model_mean"], "proxy_gain_se": gains["reward_model_se"],
            "val_perplexity_relative": gains["val_perplexity_relative"],
        }
        if "heldout_oracle_mean" in gains:
            row.update(heldout_gold_gain=gains["heldout_oracle_mean"], heldout_gold_gain_se=gains["heldout_oracle_se"])
        rows.append({**row, **mean_quality(held_out.texts, known)})
    return rows


def mean_quality(texts: list[str], known: frozenset[str]) -> dict[str, float]:
    return {name: float(values.mean()) for name, values in quality_values(texts, known).items()}


def select_point(table: pd.DataFrame, kl_budget: float, perplexity_budget: float) -> int:
    """The step with the highest selection-set gold gain among those within both budgets (of equal
    gains, the earliest). Reads the selection rows only; step 0, the reference, is always within."""
    rows = table[table["set"] == "selection"]
    within = rows[(rows["kl"] <= kl_budget) & (rows["val_perplexity_relative"] <= perplexity_budget)]
    within = within if len(within) else rows[rows["step"] == rows["step"].min()]
    return int(within.sort_values(["gold_gain", "step"], ascending=[False, True])["step"].iloc[0])


class FrontierTracker:
    """Evaluates a finetuning run at its checkpoints on both held-out sets, keeps the frontier's rows,
    and keeps a copy of the model at the point `select_point` picks so far (step 0 is the reference,
    `reference` its evaluation: heldout.reference_evaluation, the baseline best-of-n shares)."""

    def __init__(self, ref: GPT, task: EvalTask, reference: Evaluation,
                 log: Callable[[int, dict], None] = lambda step, metrics: None):
        self.ref, self.task, self.log, self.reference = ref, task, log, reference
        self.kl_budget, self.perplexity_budget = task.heldout_params.kl_budget, task.heldout_params.perplexity_budget
        self.rows = frontier_rows(0, self.reference, self.reference, task.known_words)
        self.selected_step, self.selected_model, self.selected = 0, copy.deepcopy(ref), self.reference
        self.last_step, self.last = 0, self.reference

    def add(self, step: int, model: GPT) -> None:
        with timing.phase("evaluation"):  # inside training: the stage's time profile tells the two apart
            self._add(step, model)

    def _add(self, step: int, model: GPT) -> None:
        evaluation = evaluate_policy(model, self.ref, self.task)
        rows = frontier_rows(step, self.reference, evaluation, self.task.known_words)
        self.rows += rows
        self.last_step, self.last = step, evaluation
        if select_point(self.table(), self.kl_budget, self.perplexity_budget) == step:
            self.selected_step, self.selected_model, self.selected = step, copy.deepcopy(model), evaluation
        self.log(step, {f"heldout_{row['set']}_{key}": row[key] for row in rows
                        for key in ("kl", "gold_gain", "proxy_gain", "val_perplexity_relative")})

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def metrics(self) -> dict:
        """The reported (selected) point on the report set as before/after/change, plus the same on the
        selection set and the last evaluated point, for seeing what the choice did."""
        report = "report"
        return {
            "selected_step": self.selected_step, "kl_budget": self.kl_budget,
            "perplexity_budget": self.perplexity_budget,
            "before": self.reference.metrics(report), "after": self.selected.metrics(report),
            "change": change(self.reference, self.selected, report),
            "selection_change": change(self.reference, self.selected, "selection"),
            "last": {"step": self.last_step, **change(self.reference, self.last, report)},
            "quality": {side: mean_quality(evaluation.sets[report].texts, self.task.known_words)
                        for side, evaluation in (("before", self.reference), ("after", self.selected))},
        }


def against_best_of_n(row: dict, best_of_n: pd.DataFrame) -> dict[str, float | bool | None]:
    """The policy's gold gain minus best-of-n's at the policy's KL (on the same held-out set), and the same
    for the held-out gold when both have it. Past the end of the measured best-of-n curve there is no
    comparison (None): `best_of_n_max_kl` says how far it was measured."""
    out: dict[str, float | bool | None] = {"best_of_n_max_kl": float(best_of_n["kl"].iloc[-1]),
                                           "beyond_best_of_n_curve": bool(row["kl"] > best_of_n["kl"].iloc[-1])}
    for column, prefix in (("gold_gain", ""), ("heldout_gold_gain", "heldout_")):
        if column not in best_of_n or column not in row:
            continue
        at = gain_at(best_of_n, row["kl"], column)
        out[f"best_of_n_{column}_at_kl"] = at
        out[f"{prefix}gain_over_best_of_n"] = None if at is None else row[column] - at
    return out


@dataclass(frozen=True)
class Golds:
    """What the figure and the table call the two golds: the oracle, and its held-out gold (None: none)."""

    oracle: str
    heldout: str | None = None


KL_LABEL = "KL to the reference (nats per continuation)"


def frontier_figure(
    best_of_n: pd.DataFrame, runs: dict[str, tuple[pd.DataFrame, int]], golds: Golds, soft: pd.DataFrame,
):
    """Report set. First: gold gain against KL, best-of-n's curve with a one-standard-error band, soft
    best-of-n's (the reward model's KL-optimal tilt, best_of_n.soft_best_of_n_curve) dashed, and each
    method's evaluated points joined in step order, its reported point ringed; a method below best-of-n
    at equal KL spent its KL worse than reranking. Second: gold gain against proxy gain; a method below
    best-of-n there gets less gold for the same reward-model score, i.e. it exploits the reward model.
    Third, with a held-out gold: the first panel scored by it; a lead that holds on the first gold only
    was learned from the first gold's word list, not from the preference."""
    panels = [("kl", "gold_gain", KL_LABEL, f"gold gain ({golds.oracle} oracle)", "gold against KL (report set)"),
              ("proxy_gain", "gold_gain", "proxy gain (reward model, normalised)", f"gold gain ({golds.oracle} oracle)",
               "gold against proxy: below best-of-n = hacking")]
    if golds.heldout is not None and "heldout_gold_gain" in best_of_n:
        panels.append(("kl", "heldout_gold_gain", KL_LABEL, f"held-out gold gain ({golds.heldout})",
                       f"held-out gold ({golds.heldout}, never trained on) against KL"))
    plt = figures.pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.8))
    for ax, (x, y, xlabel, ylabel, title) in zip(axes, panels):
        ax.plot(best_of_n[x], best_of_n[y], "k.-", label="best-of-n (n = 1, 2, 4, ...)")
        ax.fill_between(best_of_n[x], best_of_n[y] - best_of_n[f"{y}_se"], best_of_n[y] + best_of_n[f"{y}_se"],
                        color="0.8")
        ax.plot(soft[x], soft[y], "x--", color="0.4",
                label="soft best-of-n, one point per beta: the reward model's KL-optimal tilt")
        for (method, (table, selected)), colour in zip(runs.items(), ("tab:red", "tab:blue", "tab:purple")):
            points = table[table["set"] == "report"].sort_values("step")
            ax.plot(points[x], points[y], "o-", color=colour, ms=3, label=f"{method} (every evaluation)")
            chosen = points[points["step"] == selected]
            ax.plot(chosen[x], chosen[y], "o", ms=11, mfc="none", mec=colour, mew=2,
                    label=f"{method}: reported (chosen on the selection set)")
        ax.axhline(0.0, color="0.5", lw=0.5)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def frontier_markdown(
    best_of_n: pd.DataFrame, tables: dict[str, tuple[pd.DataFrame, int]], soft: pd.DataFrame,
) -> str:
    """The report set's frontier as Markdown: best-of-n's rows, soft best-of-n's, then each method's
    evaluated points, each with the text quality of what it keeps (eval.text_quality)."""
    held = [c for c in ("heldout_gold_gain", "heldout_gold_gain_se") if c in best_of_n]
    quality = [c for c in QUALITY if c in best_of_n]
    shown = best_of_n[["n", "kl", "gold_gain", "gold_gain_se", *held, "proxy_gain", *quality]]
    parts = ["# Gold against KL on the report set\n", "## Best-of-n (reference samples, picked by the reward model)\n",
             shown.to_markdown(index=False, floatfmt=".3f"), "",
             "## Soft best-of-n (one of the same samples kept with probability softmax(reward / beta); KL: an "
             "upper bound)\n",
             soft[["beta", "kl", "gold_gain", "gold_gain_se", *held, "proxy_gain"]].to_markdown(index=False,
                                                                                              floatfmt=".3f"),
             ""]
    for method, (table, selected) in tables.items():
        rows = table[table["set"] == "report"].sort_values("step")
        rows = rows.assign(reported=["yes" if s == selected else "" for s in rows["step"]])
        columns = ["step", "kl", "gold_gain", "gold_gain_se", *[c for c in held if c in rows], "proxy_gain",
                   *[c for c in QUALITY if c in rows], "val_perplexity_relative", "reported"]
        parts += [f"## {method} (the reported step was chosen on the selection set)\n",
                  rows[columns].to_markdown(index=False, floatfmt=".3f"), ""]
    return "\n".join(parts) + "\n"
