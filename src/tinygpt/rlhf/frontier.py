"""Gold score against KL: where a finetuned policy stands next to best-of-n (Gao et al. 2023).

A finetuning run is evaluated on both held-out sets at several points; each point is (KL from the
reference, gold gain, proxy gain, perplexity change). The point a run reports is chosen on the
selection set only, within a KL and a perplexity budget; the report set's numbers at that point are the
headline, so the choice cannot flatter them.
"""
from __future__ import annotations

import copy
from typing import Callable

import pandas as pd

from tinygpt.core import timing
from tinygpt.eval.text_quality import quality_values
from tinygpt.model.gpt import GPT
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
