"""Stage rlhf: PPO of the pretrained model against the reward model, with a per-token KL penalty to a
frozen copy; evaluated before and after on held-out prompts with the same seed.
In: models/pretrain/, models/reward/, data/preferences/prompts/, data/split/{train,val}.bin.
Out: models/rlhf/, metrics/rlhf.json, plots/rlhf/, reports/rlhf/samples.md."""
import time

import torch

from tinygpt import data, io, params, paths, tracking
from tinygpt.cli import run_stage
from tinygpt.device import resolve_device, resolve_precision
from tinygpt.oracles import Oracle
from tinygpt.preferences import load_prompts
from tinygpt.reward_model import load_reward_model
from tinygpt.rlhf import PolicyWithValue, frozen_copy, train_ppo
from tinygpt.rlhf_eval import EvalTask, change, evaluate, write_outputs
from tinygpt.weights import load_model, save_model


def main() -> None:
    start = time.perf_counter()
    p = params.load_sections("rlhf", "preferences", "tracking")
    cfg, pref = p.rlhf, p.preferences
    flat = params.flatten({"rlhf": cfg, "preferences": pref})
    with tracking.stage_run("rlhf", flat, p.tracking.experiment) as run:
        device = resolve_device(cfg.device)
        precision = resolve_precision(cfg.precision, device)
        policy = PolicyWithValue(load_model(paths.PRETRAIN_DIR, device)).to(device)
        ref = frozen_copy(policy.gpt)
        task = EvalTask(
            reward_model=load_reward_model(paths.REWARD_DIR, device).requires_grad_(False),
            prompts=torch.as_tensor(load_prompts(paths.PREFERENCE_PROMPTS, "validation"), device=device),
            val_tokens=data.read_tokens(paths.VAL_BIN), p=cfg,
            max_new_tokens=pref.continuation_tokens,  # the reward model was trained on this length
            oracle=Oracle(pref.oracle, pref.keyword), precision=precision,
        )
        before, before_metrics = evaluate(ref, ref, task)
        ppo_start = time.perf_counter()
        history = train_ppo(
            policy, ref, task.reward_model, load_prompts(paths.PREFERENCE_PROMPTS, "train"), cfg,
            task.max_new_tokens, task.oracle, precision, corpus=data.read_tokens(paths.TRAIN_BIN),
            on_step=run.log_step,
        )
        ppo_seconds = time.perf_counter() - ppo_start
        after, after_metrics = evaluate(policy.gpt, ref, task)
        save_model(policy.gpt, paths.RLHF_DIR)
        written = write_outputs(history, before, after, task)
        metrics = {
            "before": before_metrics, "after": after_metrics, "change": change(before_metrics, after_metrics),
            "final_beta": history[-1]["beta"], "precision": precision,
            "ppo_seconds": ppo_seconds, "wall_seconds": time.perf_counter() - start,
        }
        io.write_json(paths.metrics_file("rlhf"), run.finish(metrics, artifacts=written))
        d = metrics["change"]
        print(f"rlhf: oracle '{pref.oracle}' {before_metrics['oracle_mean']:.3f} -> "
              f"{after_metrics['oracle_mean']:.3f}, KL {d['kl_mean']:.2f} nats, "
              f"val perplexity {d['val_perplexity_relative']:+.1%}")


if __name__ == "__main__":
    run_stage(main)
