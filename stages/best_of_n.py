"""Stage best_of_n: the reranking baseline. `best_of_n.max_n` reference samples per held-out prompt (the
selection and the report set), scored by the reward model (proxy), the oracle (gold) and its held-out
gold (if it has one); the curve of both golds against the analytic KL for n = 1, 2, 4, ..., max_n; and
soft best-of-max_n (the reward model's KL-optimal tilt of the reference) on the same samples at each of
best_of_n.soft_betas. The deep curve: best_of_n.deep_n samples for each of the first best_of_n.deep_prompts
report prompts, so that best-of-n is measured out to the KL the policies reach (curve.csv's set "report_deep").
In: models/pretrain/ (or models/sft/: preferences.start_model), models/reward/, data/preferences/prompts/, data/split/train.bin (its words: text quality).
Out: data/best_of_n/{scores,per_prompt}.csv, plots/best_of_n/curve.csv, plots/best_of_n/soft.csv, metrics/best_of_n.json."""

import numpy as np
import torch

from tinygpt.core import io, timing
from tinygpt.core.compute import ComputeParams
from tinygpt.core.device import resolve_device, resolve_precision
from tinygpt.core.errors import TinyGptError
from tinygpt.data.tokenizer import decode
from tinygpt.data.tokens import read_tokens
from tinygpt.eval.text_quality import known_words, quality_values
from tinygpt.model.weights import load_model
from tinygpt.pipeline import params, paths, tracking
from tinygpt.pipeline.cli import run_stage
from tinygpt.pipeline.outputs.best_of_n import write_outputs
from tinygpt.pipeline.params import TrackingParams
from tinygpt.rlhf.best_of_n import DEEP, best_of_n_curve, per_prompt_curve, soft_best_of_n_curve
from tinygpt.rlhf.config import BestOfNParams, HeldOutParams, PreferencesParams
from tinygpt.rlhf.heldout import HeldOut, held_out
from tinygpt.rlhf.oracles import Oracle
from tinygpt.rlhf.preferences import load_prompts
from tinygpt.rlhf.reward_model import load_reward_model


def main() -> None:
    p = params.load_sections(best_of_n=BestOfNParams, heldout=HeldOutParams, preferences=PreferencesParams,
                             compute=ComputeParams, tracking=TrackingParams)
    bon, settings, preferences_params = p.best_of_n, p.heldout, p.preferences
    flat = params.flatten({"best_of_n": bon, "heldout": settings, "preferences": preferences_params,
                           "compute": p.compute})
    with tracking.stage_run("best_of_n", flat, p.tracking) as run:
        run.log_dataset(paths.PREFERENCE_PROMPTS, "evaluation")
        device = resolve_device(p.compute.device)
        precision = resolve_precision(p.compute.precision, device)
        with timing.phase("data"):
            reference = load_model(paths.start_model_dir(preferences_params.start_model), device).eval()
            reward_model = load_reward_model(paths.REWARD_DIR, device).requires_grad_(False)
        oracle = Oracle(preferences_params.oracle, preferences_params.keyword)
        known = known_words(read_tokens(paths.TRAIN_BIN))  # text quality's unseen words
        prompts = {name: load_prompts(paths.PREFERENCE_PROMPTS, name) for name in ("selection", "report")}
        if bon.deep_prompts > len(prompts["report"]):
            raise TinyGptError(f"best_of_n.deep_prompts is {bon.deep_prompts} but the report set has "
                               f"{len(prompts['report'])} prompts: set it to at most {len(prompts['report'])}")

        def sample_and_score(prompt_ids: np.ndarray, n: int) -> HeldOut:
            with timing.phase("evaluation"):  # sampling n per prompt, scoring them all
                return held_out(reference, reference, reward_model, torch.as_tensor(prompt_ids, device=device), n,
                                preferences_params.continuation_tokens, settings.temperature, settings.seed,
                                oracle, precision, settings.batch_size)

        samples, curves, soft, per_prompt = {}, {}, {}, {}
        for name, prompt_ids in prompts.items():
            samples[name] = sample_and_score(prompt_ids, bon.max_n)
            curves[name], soft[name], per_prompt[name] = curve_of(samples[name], prompt_ids, known, bon)
        if bon.deep_prompts:
            deep = sample_and_score(prompts["report"][: bon.deep_prompts], bon.deep_n)
            curves[DEEP], _, per_prompt[DEEP] = curve_of(deep, prompts["report"][: bon.deep_prompts], known, bon,
                                                          soft=False)
        write_outputs(samples, curves, soft, per_prompt)
        metrics = {
            **{name: curve.set_index("n").to_dict(orient="index") for name, curve in curves.items()},
            "soft": {name: {f"beta_{row.pop('beta'):g}": row for row in table.to_dict(orient="records")}
                     for name, table in soft.items()},
            "heldout_gold": oracle.heldout_name, "precision": precision,
        }
        artifacts = [paths.BEST_OF_N_CURVE_CSV.parent]
        io.write_json(paths.metrics_file("best_of_n"), run.finish(metrics, artifacts=artifacts))
        report = curves["report"].set_index("n")
        print(f"best_of_n: report-set gold gain {report.loc[4, 'gold_gain']:+.3f} at n=4 "
              f"(KL {report.loc[4, 'kl']:.2f}), {report['gold_gain'].iloc[-1]:+.3f} at n={bon.max_n} "
              f"(KL {report['kl'].iloc[-1]:.2f})")
        if DEEP in curves:
            last = curves[DEEP].iloc[-1]
            print(f"best_of_n: {bon.deep_prompts} report prompts, {last['gold_gain']:+.3f} at n={bon.deep_n} "
                  f"(KL {last['kl']:.2f})")


def curve_of(s: HeldOut, prompt_ids: np.ndarray, known: frozenset[str], bon: BestOfNParams, soft: bool = True):
    """Best-of-n's curve (n = 1, 2, 4, ... up to the samples per prompt), soft best-of-n's, and best-of-n per
    prompt with one actual pick each, from one set's samples: both golds and the text quality of the picks."""
    n = s.samples_per_prompt
    shape = (len(s.gold) // n, n)
    proxy, gold = s.reward.reshape(shape), s.gold.reshape(shape)
    heldout = None if s.heldout_gold is None else s.heldout_gold.reshape(shape)
    quality = {name: v.reshape(shape) for name, v in quality_values(s.texts, known).items()}
    curve = best_of_n_curve(proxy, gold, n, heldout, quality)
    soft_curve = soft_best_of_n_curve(proxy, gold, bon.soft_betas, heldout) if soft else None
    per_prompt = per_prompt_curve(proxy, gold, n, heldout, s.texts, quality)
    per_prompt.insert(1, "prompt_text", [decode(prompt_ids[i].tolist()) for i in per_prompt["prompt"]])
    return curve, soft_curve, per_prompt


if __name__ == "__main__":
    run_stage(main)
