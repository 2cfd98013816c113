"""Stage frontier: best-of-n, PPO and DPO on one gold-versus-KL figure and table (report set), each
method's reported point against best-of-n at the same KL (prompt by prompt, on the prompts both measured:
both golds and the text quality),
and their continuations of the same prompts side by side.
In: plots/best_of_n/{curve,soft}.csv, data/best_of_n/per_prompt.csv, plots/{rlhf,dpo}/frontier.csv,
reports/{rlhf,dpo}/samples.csv, metrics/{rlhf,dpo}.json, data/split/train.bin (its words: text quality).
Out: plots/frontier/, reports/frontier/{table,samples}.md, metrics/frontier.json."""

import pandas as pd

from tinygpt.core import io
from tinygpt.data.tokens import read_tokens
from tinygpt.eval.text_quality import known_words, quality_values
from tinygpt.pipeline import params, paths, tracking
from tinygpt.pipeline.cli import run_stage
from tinygpt.pipeline.outputs.frontier import Golds, write_outputs, write_samples_markdown
from tinygpt.pipeline.params import TrackingParams
from tinygpt.rlhf.best_of_n import COMPARED, DEEP, against_best_of_n
from tinygpt.rlhf.config import PreferencesParams
from tinygpt.rlhf.oracles import HELDOUT_GOLD

METHODS = {"PPO": ("rlhf", paths.RLHF_FRONTIER_CSV, paths.RLHF_SAMPLES_CSV),
           "DPO": ("dpo", paths.DPO_FRONTIER_CSV, paths.DPO_SAMPLES_CSV)}
# A reported point's numbers (the held-out gold's where the oracle has one)
POINT_KEYS = ("kl", "gold_gain", "gold_gain_se", "proxy_gain", "heldout_gold_gain", "heldout_gold_gain_se",
              "val_perplexity_relative")


def main() -> None:
    p = params.load_sections(preferences=PreferencesParams, tracking=TrackingParams)
    with tracking.stage_run("frontier", {"preferences.oracle": p.preferences.oracle}, p.tracking) as run:
        curve = pd.read_csv(paths.BEST_OF_N_CURVE_CSV)
        # the report set's curve on every prompt, then the deep one (fewer prompts, larger n) if measured
        curves = {name: curve[curve["set"] == name].reset_index(drop=True) for name in ("report", DEEP)
                  if (curve["set"] == name).any()}
        best_of_n = curves["report"]
        soft = pd.read_csv(paths.SOFT_BEST_OF_N_CSV)
        soft = soft[soft["set"] == "report"].reset_index(drop=True)
        per_prompt = pd.read_csv(paths.BEST_OF_N_PER_PROMPT, keep_default_na=False)
        per_prompt = {name: per_prompt[per_prompt["set"] == name].reset_index(drop=True) for name in curves}
        known = known_words(read_tokens(paths.TRAIN_BIN))  # text quality's unseen words, as best_of_n's
        runs, samples, metrics = {}, {}, {}
        for method, (stage, frontier_csv, samples_csv) in METHODS.items():
            table = pd.read_csv(frontier_csv)
            selected = io.read_json(paths.metrics_file(stage))["selected_step"]
            runs[method] = (table, selected)
            samples[method] = report_samples(samples_csv)
            row = table[(table["set"] == "report") & (table["step"] == selected)].iloc[0].to_dict()
            scored = samples[method].assign(**quality_values(samples[method]["text"], known))
            by_prompt = scored.groupby("prompt")
            policy = {column: by_prompt[column].mean().to_numpy()[None, :] for column in COMPARED
                      if column in scored}  # one seed: (1, prompts)
            metrics[method.lower()] = {
                "selected_step": selected,
                **{k: row[k] for k in POINT_KEYS if k in row}, **against_best_of_n(row["kl"], policy, per_prompt),
            }
        golds = Golds(p.preferences.oracle, HELDOUT_GOLD[p.preferences.oracle])
        reported = {method: metrics[method.lower()] for method in METHODS}
        write_outputs(curves, runs, golds, soft, reported)
        write_samples_markdown(per_prompt, samples, reported, golds)
        at = best_of_n.set_index("n")
        curve_keys = ("kl", "gold_gain", "gold_gain_se", "heldout_gold_gain", "heldout_gold_gain_se")
        metrics["best_of_n"] = {f"n{n}": {k: at.loc[n, k] for k in curve_keys if k in at} for n in at.index}
        if DEEP in curves:
            deep = curves[DEEP].set_index("n")
            metrics["best_of_n_deep"] = {f"n{n}": {k: deep.loc[n, k] for k in curve_keys if k in deep}
                                         for n in deep.index}
        metrics["heldout_gold"] = golds.heldout
        io.write_json(paths.metrics_file("frontier"), run.finish(metrics, artifacts=[paths.FRONTIER_PLOTS,
                                                                                      paths.FRONTIER_REPORTS]))
        for method in METHODS:
            m = metrics[method.lower()]
            there = ("beyond the measured best-of-n curve (to KL {:.2f}): no comparison".format(m["best_of_n_max_kl"])
                     if m["beyond_best_of_n_curve"] else
                     f"best-of-n there ({m['best_of_n_curve']}) {m['best_of_n_gold_gain_at_kl']:+.3f} "
                     f"({m['gain_over_best_of_n']:+.3f} ± {m['gain_over_best_of_n_se']:.3f})")
            print(f"frontier: {method} gold gain {m['gold_gain']:+.3f} at KL {m['kl']:.2f}; {there}")


def report_samples(path) -> pd.DataFrame:
    """A policy's report-set samples (reports/{rlhf,dpo}/samples.csv, outputs.samples' format)."""
    table = pd.read_csv(path, keep_default_na=False)  # an empty continuation stays "", not NaN
    return table[table["set"] == "report"].sort_values(["prompt", "sample"]).reset_index(drop=True)


if __name__ == "__main__":
    run_stage(main)
