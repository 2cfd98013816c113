"""Stage rlhf: PPO of the pretrained model against the reward model, with a per-token KL penalty to a
frozen copy. Evaluated on both held-out sets every `rlhf.eval_interval` steps; the step reported (and
saved) is chosen on the selection set within the KL and perplexity budgets, its report-set numbers are
the headline.
In: models/pretrain/ (or models/sft/: preferences.start_model), models/reward/, data/best_of_n/scores.csv (the baseline), data/preferences/prompts/, data/split/{train,val}.bin.
Out: models/rlhf/, metrics/rlhf.json, plots/rlhf/, reports/rlhf/samples.{md,csv}."""

import torch

from tinygpt.core import io, timing
from tinygpt.core.compute import ComputeParams
from tinygpt.core.device import resolve_device, resolve_precision
from tinygpt.data.tokens import read_tokens
from tinygpt.eval.text_quality import known_words
from tinygpt.model.weights import load_model, save_model
from tinygpt.pipeline import params, paths, registry, tracking
from tinygpt.pipeline.cli import run_stage
from tinygpt.pipeline.outputs.samples import read_samples
from tinygpt.pipeline.outputs.rlhf import write_outputs
from tinygpt.pipeline.params import TrackingParams
from tinygpt.rlhf.config import HeldOutParams, PreferencesParams, RlhfParams
from tinygpt.rlhf.finetune import PolicyWithValue, train_ppo
from tinygpt.rlhf.tuning import frozen_copy
from tinygpt.rlhf.frontier import FrontierTracker
from tinygpt.rlhf.heldout import EvalTask, reference_evaluation
from tinygpt.rlhf.oracles import Oracle
from tinygpt.rlhf.preferences import load_prompts
from tinygpt.rlhf.reward_model import load_reward_model


def main() -> None:
    p = params.load_sections(rlhf=RlhfParams, heldout=HeldOutParams, preferences=PreferencesParams,
                             compute=ComputeParams, tracking=TrackingParams)
    rlhf_params, preferences_params = p.rlhf, p.preferences
    flat = params.flatten({"rlhf": rlhf_params, "heldout": p.heldout, "preferences": preferences_params,
                           "compute": p.compute})
    with tracking.stage_run("rlhf", flat, p.tracking, system_metrics=True) as run:
        run.log_dataset(paths.PREFERENCE_PROMPTS, "training")
        run.log_dataset(paths.TRAIN_BIN, "training")  # PPO-ptx's language-model batches
        device = resolve_device(p.compute.device)
        precision = resolve_precision(p.compute.precision, device)
        with timing.phase("data"):
            policy = PolicyWithValue(load_model(paths.start_model_dir(p.preferences.start_model), device)).to(device)
            ref = frozen_copy(policy.gpt)
            task = EvalTask(
                reward_model=load_reward_model(paths.REWARD_DIR, device).requires_grad_(False),
                prompts={name: torch.as_tensor(load_prompts(paths.PREFERENCE_PROMPTS, name), device=device)
                         for name in ("selection", "report")},
                val_tokens=read_tokens(paths.VAL_BIN), heldout_params=p.heldout,
                max_new_tokens=preferences_params.continuation_tokens,  # the reward model was trained on this length
                oracle=Oracle(preferences_params.oracle, preferences_params.keyword), precision=precision,
                known_words=known_words(read_tokens(paths.TRAIN_BIN)),
            )
        with timing.phase("evaluation"):  # the baseline: best_of_n's reference samples (heldout.reference_evaluation)
            reference = reference_evaluation(ref, task, read_samples(paths.BEST_OF_N_SCORES))
        tracker = FrontierTracker(ref, task, reference, run.log_step)
        with timing.phase("training"):  # its evaluations count as evaluation (FrontierTracker)
            history = train_ppo(
                policy, ref, task.reward_model, load_prompts(paths.PREFERENCE_PROMPTS, "train"), rlhf_params,
                task.max_new_tokens, task.oracle, precision, corpus=read_tokens(paths.TRAIN_BIN),
                on_step=run.log_step, on_eval=lambda step, trained: tracker.add(step, trained.gpt),
            )
        save_model(tracker.selected_model, paths.RLHF_DIR)
        written = write_outputs(history, tracker, task)
        metrics = {**tracker.metrics(), "final_beta": history[-1]["beta"], "precision": precision}
        registry.log_stage_model("rlhf", p.tracking.experiment, paths.RLHF_DIR, metrics)
        io.write_json(paths.metrics_file("rlhf"), run.finish(metrics, artifacts=written))
        d = metrics["change"]
        print(f"rlhf: step {metrics['selected_step']} chosen on the selection set; report set: oracle "
              f"'{preferences_params.oracle}' {d['oracle_mean']:+.3f} ± {d['oracle_se']:.3f}, KL {d['kl_mean']:.2f} "
              f"nats, val perplexity {d['val_perplexity_relative']:+.1%}")


if __name__ == "__main__":
    run_stage(main)
