"""Stage reward: the pretrained transformer plus a scalar head on the last token, trained on the
preference pairs with the Bradley-Terry loss, its rewards normalised on the training pairs.
In: models/pretrain/ (or models/sft/: preferences.start_model), data/preferences/pairs/.
Out: models/reward/, metrics/reward.json, plots/reward/."""

import torch

from tinygpt.core import io, timing
from tinygpt.core.compute import ComputeParams
from tinygpt.core.device import resolve_device, resolve_precision
from tinygpt.model.weights import load_model
from tinygpt.pipeline import params, paths, registry, tracking
from tinygpt.pipeline.cli import run_stage
from tinygpt.pipeline.outputs import reward as reward_outputs
from tinygpt.pipeline.params import TrackingParams
from tinygpt.rlhf import reward_model as rm
from tinygpt.rlhf.config import PreferencesParams, RewardParams
from tinygpt.rlhf.preferences import load_pairs


def main() -> None:
    p = params.load_sections(reward=RewardParams, preferences=PreferencesParams, compute=ComputeParams,
                             tracking=TrackingParams)
    reward_params = p.reward
    flat = params.flatten({"reward": reward_params, "preferences": p.preferences, "compute": p.compute})
    with tracking.stage_run("reward", flat, p.tracking, system_metrics=True) as run:
        run.log_dataset(paths.PREFERENCE_PAIRS, "training")
        device = resolve_device(p.compute.device)
        precision = resolve_precision(p.compute.precision, device)
        with timing.phase("data"):
            pairs = load_pairs(paths.PREFERENCE_PAIRS)
            train = rm.pair_tensors(pairs["train"], device)
            torch.manual_seed(reward_params.seed)
            model = rm.RewardModel(load_model(paths.start_model_dir(p.preferences.start_model), device)).to(device)
        with timing.phase("training"):
            history = rm.train_reward_model(
                model, train, reward_params.learning_rate, reward_params.weight_decay, reward_params.epochs,
                reward_params.batch_size, reward_params.warmup_steps, reward_params.grad_clip, reward_params.seed,
                precision, on_step=run.log_step,
            )
            rm.fit_normalisation(model, train, 4 * reward_params.batch_size, precision)
        rm.save_reward_model(model, paths.REWARD_DIR)
        reward_outputs.write_plots(history)
        with timing.phase("evaluation"):
            metrics = {
                "train": rm.evaluate_pairs(model, train, 4 * reward_params.batch_size, precision),
                **{held_out: rm.evaluate_pairs(model, rm.pair_tensors(pairs[held_out], device),
                                               4 * reward_params.batch_size, precision)
                   for held_out in ("selection", "report")},
                "normalisation": {"offset": model.offset.item(), "scale": model.scale.item()},
                "steps": len(history), "precision": precision,
            }
        registry.log_stage_model("reward", p.tracking.experiment, paths.REWARD_DIR, metrics, scorer=True)
        io.write_json(paths.metrics_file("reward"), run.finish(metrics, artifacts=[paths.REWARD_PLOTS]))
        v = metrics["report"]
        print(f"reward: report-set pair accuracy {v['accuracy']:.3f}, "
              f"Spearman with the oracle {v['oracle_spearman']:.3f} ({len(pairs['report'])} pairs)")


if __name__ == "__main__":
    run_stage(main)
