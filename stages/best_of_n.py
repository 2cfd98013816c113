"""Stage best_of_n: the reranking baseline. `best_of_n.max_n` reference samples per held-out prompt (the
selection and the report set), scored by the reward model (proxy), the oracle (gold) and its held-out
gold (if it has one); the curve of both golds against the analytic KL for n = 1, 2, 4, ..., max_n; and
soft best-of-max_n (the reward model's KL-optimal tilt of the reference) on the same samples at each of
best_of_n.soft_betas.
In: models/pretrain/ (or models/sft/: preferences.start_model), models/reward/, data/preferences/prompts/, data/split/train.bin (its words: text quality).
Out: data/best_of_n/scores.csv, plots/best_of_n/curve.csv, plots/best_of_n/soft.csv, metrics/best_of_n.json."""

import torch

from tinygpt.core import io, timing
from tinygpt.core.compute import ComputeParams
from tinygpt.core.device import resolve_device, resolve_precision
from tinygpt.data.tokens import read_tokens
from tinygpt.eval.text_quality import known_words, quality_values
from tinygpt.model.weights import load_model
from tinygpt.pipeline import params, paths, tracking
from tinygpt.pipeline.cli import run_stage
from tinygpt.pipeline.outputs.best_of_n import write_outputs
from tinygpt.pipeline.params import TrackingParams
from tinygpt.rlhf.best_of_n import best_of_n_curve, soft_best_of_n_curve
from tinygpt.rlhf.config import BestOfNParams, HeldOutParams, PreferencesParams
from tinygpt.rlhf.heldout import held_out
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
        samples, curves, soft = {}, {}, {}
        for held_out_set in ("selection", "report"):
            prompts = torch.as_tensor(load_prompts(paths.PREFERENCE_PROMPTS, held_out_set), device=device)
            with timing.phase("evaluation"):  # sampling max_n per prompt, scoring them all
                samples[held_out_set] = held_out(
                    reference, reference, reward_model, prompts, bon.max_n, preferences_params.continuation_tokens,
                    settings.temperature, settings.seed, oracle, precision, settings.batch_size,
                )
            s, shape = samples[held_out_set], (len(prompts), bon.max_n)
            proxy, gold = s.reward.reshape(shape), s.gold.reshape(shape)
            heldout = None if s.heldout_gold is None else s.heldout_gold.reshape(shape)
            quality = {name: v.reshape(shape) for name, v in quality_values(s.texts, known).items()}
            curves[held_out_set] = best_of_n_curve(proxy, gold, bon.max_n, heldout, quality)
            soft[held_out_set] = soft_best_of_n_curve(proxy, gold, bon.soft_betas, heldout)
        write_outputs(samples, curves, soft)
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


if __name__ == "__main__":
    run_stage(main)
