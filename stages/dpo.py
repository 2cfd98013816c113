"""Stage dpo: Direct Preference Optimization of the pretrained model on the preference pairs, against a
frozen copy of it; evaluated on both held-out sets like PPO (the reward model only scores the held-out
continuations, DPO never sees it; with dpo.pairs: reward_ranked it also ranks the reference's samples of
the train prompts into the training pairs), the reported step chosen on the selection set.
In: models/pretrain/ (or models/sft/: preferences.start_model), models/reward/, data/best_of_n/scores.csv (the baseline), data/preferences/, data/split/train.bin (dpo.ptx_coef, text quality's known words), data/split/val.bin.
Out: models/dpo/, metrics/dpo.json, plots/dpo/, reports/dpo/samples.{md,csv}."""

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
from tinygpt.pipeline.outputs.dpo import write_outputs
from tinygpt.pipeline.params import TrackingParams
from tinygpt.rlhf import dpo
from tinygpt.rlhf.config import DpoParams, HeldOutParams, PreferencesParams
from tinygpt.rlhf.tuning import frozen_copy
from tinygpt.rlhf.frontier import FrontierTracker
from tinygpt.rlhf.heldout import EvalTask, reference_evaluation
from tinygpt.rlhf.oracles import Oracle
from tinygpt.rlhf.preferences import load_pairs, load_prompts
from tinygpt.rlhf.ranked_pairs import reward_ranked_pairs
from tinygpt.rlhf.reward_model import load_reward_model


def main() -> None:
    p = params.load_sections(dpo=DpoParams, heldout=HeldOutParams, preferences=PreferencesParams,
                             compute=ComputeParams, tracking=TrackingParams)
    dpo_params, preferences_params = p.dpo, p.preferences
    flat = params.flatten({"dpo": dpo_params, "heldout": p.heldout, "preferences": preferences_params,
                           "compute": p.compute})
    with tracking.stage_run("dpo", flat, p.tracking, system_metrics=True) as run:
        ranked = dpo_params.pairs == "reward_ranked"
        run.log_dataset(paths.PREFERENCE_PROMPTS if ranked else paths.PREFERENCE_PAIRS, "training")
        run.log_dataset(paths.PREFERENCE_PROMPTS, "evaluation")
        if dpo_params.ptx_coef > 0:
            run.log_dataset(paths.TRAIN_BIN, "training")  # DPO-ptx's language-model batches
        device = resolve_device(p.compute.device)
        precision = resolve_precision(p.compute.precision, device)
        with timing.phase("data"):
            policy = load_model(paths.start_model_dir(preferences_params.start_model), device)
            ref = frozen_copy(policy)
            task = EvalTask(
                reward_model=load_reward_model(paths.REWARD_DIR, device).requires_grad_(False),
                prompts={name: torch.as_tensor(load_prompts(paths.PREFERENCE_PROMPTS, name), device=device)
                         for name in ("selection", "report")},
                val_tokens=read_tokens(paths.VAL_BIN), heldout_params=p.heldout,
                max_new_tokens=preferences_params.continuation_tokens,
                oracle=Oracle(preferences_params.oracle, preferences_params.keyword), precision=precision,
                known_words=known_words(read_tokens(paths.TRAIN_BIN)),
            )
            pairs = load_pairs(paths.PREFERENCE_PAIRS)
        with timing.phase("evaluation"):  # the baseline: best_of_n's reference samples (heldout.reference_evaluation)
            reference = reference_evaluation(ref, task, read_samples(paths.BEST_OF_N_SCORES))
        tracker = FrontierTracker(ref, task, reference, run.log_step)
        train_pairs = pairs["train"]
        if ranked:  # samples of the reference, judged by the reward model
            with timing.phase("sampling"):
                train_pairs = reward_ranked_pairs(
                    ref, task.reward_model, load_prompts(paths.PREFERENCE_PROMPTS, "train"),
                    dpo_params.ranked_samples, preferences_params.continuation_tokens, preferences_params.temperature,
                    dpo_params.seed, precision, p.heldout.batch_size, dpo_params.ranked_pairs,
                    dpo_params.repetition_penalty)
        with timing.phase("training"):  # its evaluations count as evaluation (FrontierTracker)
            history = dpo.train_dpo(
                policy, ref, train_pairs, dpo_params, precision, on_step=run.log_step,
                on_eval=lambda step, model: tracker.add(step, model) if step > 0 else None,  # step 0: the reference
                corpus=read_tokens(paths.TRAIN_BIN) if dpo_params.ptx_coef > 0 else None,
            )
        save_model(tracker.selected_model, paths.DPO_DIR)
        written = write_outputs(history, tracker, task)
        held_out_pairs = {}
        with timing.phase("evaluation"):
            for name in ("selection", "report"):
                data = dpo.preference_tensors(pairs[name], device)
                reference = dpo.all_logprobs(ref, data, 4 * dpo_params.batch_size, precision)
                held_out_pairs[name] = dpo.evaluate_dpo(tracker.selected_model, data, reference, dpo_params.beta,
                                                        4 * dpo_params.batch_size, precision)
        metrics = {**tracker.metrics(), "pairs": held_out_pairs,
                   "training_pairs": dpo.pair_summary(train_pairs),
                   "steps": len(history), "precision": precision}
        registry.log_stage_model("dpo", p.tracking.experiment, paths.DPO_DIR, metrics)
        io.write_json(paths.metrics_file("dpo"), run.finish(metrics, artifacts=written))
        d = metrics["change"]
        print(f"dpo: step {metrics['selected_step']} chosen on the selection set; report set: oracle "
              f"'{preferences_params.oracle}' {d['oracle_mean']:+.3f} ± {d['oracle_se']:.3f}, KL {d['kl_mean']:.2f} "
              f"nats, val perplexity {d['val_perplexity_relative']:+.1%}")


if __name__ == "__main__":
    run_stage(main)
