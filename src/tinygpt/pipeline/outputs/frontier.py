"""What the frontier stage writes: the gold-versus-KL figure (Gao et al. 2023: where a finetuned policy stands
next to best-of-n), its points as one CSV, and the table."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from tinygpt.core import figures, io
from tinygpt.core.figures import write_figure
from tinygpt.eval.text_quality import QUALITY
from tinygpt.pipeline import paths
from tinygpt.rlhf.best_of_n import COMPARED


def write_outputs(
    curves: dict[str, pd.DataFrame], runs: dict[str, tuple[pd.DataFrame, int]], golds: Golds, soft: pd.DataFrame,
    reported: dict[str, dict],
) -> None:
    """`curves`: best-of-n's measured curves on the report set (name -> curve, "report" first); `reported`:
    method -> its reported point against best-of-n (best_of_n.against_best_of_n, with kl and selected_step)."""
    write_figure(frontier_figure(curves, runs, golds, soft), paths.FRONTIER_PNG)
    best_of_n = curves["report"]
    # One long table (method, kl, gold_gain, ...) so `dvc plots` can draw all methods from one file.
    values = ["kl", "gold_gain", *(["heldout_gold_gain"] if "heldout_gold_gain" in best_of_n else []), "proxy_gain"]
    points = [curve.assign(method="best-of-n" if name == "report" else f"best-of-n ({name})")[["method", "n", *values]]
              for name, curve in curves.items()]
    points.append(soft.assign(method="soft best-of-n")[["method", "beta", *values]])
    for method, (table, _) in runs.items():
        report = table[table["set"] == "report"].sort_values("step")
        points.append(report.assign(method=method)[["method", "step", *values]])
    io.write_text(paths.FRONTIER_POINTS_CSV, pd.concat(points).to_csv(index=False, float_format="%.6g"))
    io.write_text(paths.FRONTIER_TABLE_MD, reported_markdown(reported, runs, golds)
                  + frontier_markdown(curves, runs, soft))


@dataclass(frozen=True)
class Golds:
    """What the figure and the table call the two golds: the oracle, and its held-out gold (None: none)."""

    oracle: str
    heldout: str | None = None


KL_LABEL = "KL to the reference (nats per continuation)"


def frontier_figure(
    curves: dict[str, pd.DataFrame], runs: dict[str, tuple[pd.DataFrame, int]], golds: Golds, soft: pd.DataFrame,
):
    """Report set. First: gold gain against KL, best-of-n's curve with a one-standard-error band, soft
    best-of-n's (the reward model's KL-optimal tilt, best_of_n.soft_best_of_n_curve) dashed, and each
    method's evaluated points joined in step order, its reported point ringed; a method below best-of-n
    at equal KL spent its KL worse than reranking. Second: gold gain against proxy gain; a method below
    best-of-n there gets less gold for the same reward-model score, i.e. it exploits the reward model.
    Third, with a held-out gold: the first panel scored by it; a lead that holds on the first gold only
    was learned from the first gold's word list, not from the preference. `curves`: best-of-n's on the
    report set ("report") and, if measured, the deep one (fewer prompts, out to larger n), each drawn
    only as far as it was measured."""
    best_of_n = curves["report"]
    panels = [("kl", "gold_gain", KL_LABEL, f"gold gain ({golds.oracle} oracle)", "gold against KL (report set)"),
              ("proxy_gain", "gold_gain", "proxy gain (reward model, normalised)", f"gold gain ({golds.oracle} oracle)",
               "gold against proxy: below best-of-n = hacking")]
    if golds.heldout is not None and "heldout_gold_gain" in best_of_n:
        panels.append(("kl", "heldout_gold_gain", KL_LABEL, f"held-out gold gain ({golds.heldout})",
                       f"held-out gold ({golds.heldout}, never trained on) against KL"))
    plt = figures.pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.8))
    for ax, (x, y, xlabel, ylabel, title) in zip(axes, panels):
        for curve, style, shade in zip(curves.values(), ("k.-", "k.:"), ("0.8", "0.9")):
            ax.plot(curve[x], curve[y], style, label=best_of_n_label(curve))
            ax.fill_between(curve[x], curve[y] - curve[f"{y}_se"], curve[y] + curve[f"{y}_se"], color=shade)
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


def best_of_n_label(curve: pd.DataFrame) -> str:
    return f"best-of-n, n = 1, 2, 4, ..., {curve['n'].iloc[-1]} ({curve['prompts'].iloc[0]} report prompts)"


def frontier_markdown(
    curves: dict[str, pd.DataFrame], tables: dict[str, tuple[pd.DataFrame, int]], soft: pd.DataFrame,
) -> str:
    """The report set's frontier as Markdown: best-of-n's rows (each measured curve), soft best-of-n's,
    then each method's evaluated points, each with the text quality of what it keeps (eval.text_quality)."""
    best_of_n = curves["report"]
    held = [c for c in ("heldout_gold_gain", "heldout_gold_gain_se") if c in best_of_n]
    quality = [c for c in QUALITY if c in best_of_n]
    parts = ["# Gold against KL on the report set\n"]
    for curve in curves.values():
        shown = curve[["n", "kl", "gold_gain", "gold_gain_se", *held, "proxy_gain", *quality]]
        parts += [f"## {best_of_n_label(curve).capitalize()}: reference samples picked by the reward model\n",
                  shown.to_markdown(index=False, floatfmt=".3f"), ""]
    parts += ["## Soft best-of-n (one of the first curve's samples kept with probability softmax(reward / beta); "
              "KL: an upper bound)\n",
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


def reported_markdown(reported: dict[str, dict], runs: dict[str, tuple[pd.DataFrame, int]], golds: Golds) -> str:
    """Each method's reported point against best-of-n at its KL (best_of_n.against_best_of_n: changes against
    the reference's mean per prompt, bootstrap errors over the report prompts): both golds, then the text
    quality, each as the policy's change minus best-of-n's."""
    rows = []
    for method, m in reported.items():
        table, selected = runs[method]
        point = table[(table["set"] == "report") & (table["step"] == selected)].iloc[0]
        row = {"method": method, "step": selected, "KL": m["kl"], "best-of-n curve": m["best_of_n_curve"] or "none",
               "prompts": m["best_of_n_prompts"]}
        names = {"gold": golds.oracle, "heldout_gold": golds.heldout, **{q: q for q in QUALITY}}
        for column, (_, over_key) in COMPARED.items():
            if names[column] is not None and over_key in m:
                gap = m[over_key]
                row[f"− best-of-n, {names[column]}"] = ("not measured that far" if gap is None else
                                                        f"{gap:+.3f} ± {m[f'{over_key}_se']:.3f}")
        row.update({f"{q} (policy)": point[q] for q in QUALITY if q in point})
        rows.append(row)
    return ("# The reported points against best-of-n at the same KL (report set)\n\n"
            "The policy's change (every report prompt) minus best-of-n's at the policy's KL (the prompts its curve "
            "has, linear in KL between the measured n), each against the reference's mean on the same prompt; ± a "
            "bootstrap over the report prompts. Golds: above 0, the policy gains more than reranking at the same "
            "KL. Text quality: above 0 on repeated_words (or unseen_words), the policy repeats (or invents) "
            "more words than best-of-n's picks; below 0 on distinct_2, it repeats more word pairs. "
            "The policy's own quality (every report prompt) closes the row.\n\n"
            + pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f") + "\n\n")


# Prompts of the sample table: enough to see each method's style, few enough to read.
SAMPLE_PROMPTS = 6


def write_samples_markdown(per_prompt: dict[str, pd.DataFrame], samples: dict[str, pd.DataFrame],
                           reported: dict[str, dict], golds: Golds) -> None:
    io.write_text(paths.FRONTIER_SAMPLES_MD, samples_markdown(per_prompt, samples, reported, golds))


def samples_markdown(per_prompt: dict[str, pd.DataFrame], samples: dict[str, pd.DataFrame],
                     reported: dict[str, dict], golds: Golds, prompts: int = SAMPLE_PROMPTS) -> str:
    """The first `prompts` report prompts, each continued by the reference (its first sample), best-of-n's
    actual pick at the largest n of each curve, and each method's reported policy (its first sample), with
    both golds: what the numbers of the frontier look like as text."""
    def cell(text: str) -> str:
        return text.replace("\n", "⏎").replace("|", "\\|")

    gold_columns = [("gold", golds.oracle), ("heldout_gold", golds.heldout)]
    parts = [f"# The same report prompts continued by each method (scores: {golds.oracle}"
             + (f", {golds.heldout}" if golds.heldout else "") + ")\n\n"
             "Best-of-n's continuation is an actual pick (the reward model's favourite of the prompt's first n "
             "reference samples); the policies' is their first sample at the reported step. KL: the method's "
             "mean KL to the reference (nats per continuation). ⏎ marks a newline.\n"]
    report = per_prompt["report"]
    for prompt in range(min(prompts, report["prompt"].nunique())):
        rows = []
        first = report[(report["prompt"] == prompt) & (report["n"] == 1)].iloc[0]
        rows.append(("reference (a sample)", 0.0, first, "pick_"))
        for name, table in per_prompt.items():
            here = table[table["prompt"] == prompt]
            if len(here):
                top = here[here["n"] == here["n"].max()].iloc[0]
                rows.append((f"best-of-{top['n']} ({name} curve)", top["kl"], top, "pick_"))
        for method, table in samples.items():
            here = table[table["prompt"] == prompt].iloc[0]
            rows.append((f"{method}, step {reported[method]['selected_step']}", reported[method]["kl"], here, ""))
        shown = pd.DataFrame([{"continuation by": who, "KL": kl, "text": cell(str(row[f"{prefix}text"])),
                               **{name: row[f"{prefix}{column}"] for column, name in gold_columns
                                  if name is not None and f"{prefix}{column}" in row}}
                              for who, kl, row, prefix in rows])
        parts += [f"## Prompt {prompt}: “{cell(first['prompt_text'])}”\n",
                  shown.to_markdown(index=False, floatfmt=".3f"), ""]
    return "\n".join(parts) + "\n"
