"""Stage rlhf: PPO of the pretrained model against the reward model, with a per-token KL penalty to a
frozen copy; evaluated before and after on held-out prompts with the same seed.
In: models/pretrain/, models/reward/, data/preferences/prompts/, data/split/val.bin.
Out: models/rlhf/, metrics/rlhf.json, plots/rlhf/, reports/rlhf/samples.md."""
import time

import torch

from tinygpt import data, io, params, paths, tracking
from tinygpt.cli import run_stage
from tinygpt.device import resolve_device, resolve_precision
from tinygpt.evaluate import write_figure
from tinygpt.oracles import Oracle
from tinygpt.preferences import load_prompts
from tinygpt.reward_model import load_reward_model
from tinygpt.rlhf import PolicyWithValue, frozen_copy, train_ppo
from tinygpt.rlhf_eval import change, evaluate, samples_markdown, samples_table
from tinygpt.rlhf_plots import proxy_vs_gold_figure, write_curves
from tinygpt.weights import load_model, save_model

CURVES = ["reward_model_score", "gold_score", "kl", "beta", "entropy", "policy_loss", "value_loss",
          "clip_fraction", "approx_kl", "explained_variance", "value_clip_fraction", "response_tokens"]


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
        reward_model = load_reward_model(paths.REWARD_DIR, device).requires_grad_(False)
        oracle = Oracle(pref.oracle, pref.keyword)
        val_prompts = load_prompts(paths.PREFERENCE_PROMPTS, "validation")
        held_out = torch.as_tensor(val_prompts, device=device)
        val_tokens = data.read_tokens(paths.VAL_BIN)
        length = pref.continuation_tokens  # the reward model was trained on continuations of this length
        before, before_metrics = evaluate(ref, ref, reward_model, held_out, val_tokens, cfg, length, oracle, precision)
        ppo_start = time.perf_counter()
        history = train_ppo(policy, ref, reward_model, load_prompts(paths.PREFERENCE_PROMPTS, "train"), cfg,
                            length, oracle, precision, on_step=run.log_step)
        ppo_seconds = time.perf_counter() - ppo_start
        after, after_metrics = evaluate(policy.gpt, ref, reward_model, held_out, val_tokens, cfg, length, oracle,
                                        precision)
        save_model(policy.gpt, paths.RLHF_DIR)
        table = write_curves(history, paths.RLHF_STEPS_CSV, paths.RLHF_STEPS_PNG, CURVES, "PPO training")
        write_figure(proxy_vs_gold_figure(table, oracle.name), paths.RLHF_PROXY_GOLD_PNG)
        samples = samples_table(val_prompts, before, after, cfg.eval_samples_per_prompt, cfg.table_samples)
        io.write_text(paths.RLHF_SAMPLES_MD, samples_markdown(samples, oracle, cfg.seed))
        metrics = {
            "before": before_metrics, "after": after_metrics, "change": change(before_metrics, after_metrics),
            "final_beta": history[-1]["beta"], "precision": precision,
            "ppo_seconds": ppo_seconds, "wall_seconds": time.perf_counter() - start,
        }
        io.write_json(paths.metrics_file("rlhf"), run.finish(metrics, artifacts=[paths.RLHF_PLOTS, paths.RLHF_REPORTS]))
        d = metrics["change"]
        print(f"rlhf: oracle '{oracle.name}' {before_metrics['oracle_mean']:.3f} -> {after_metrics['oracle_mean']:.3f}, "
              f"KL {d['kl_mean']:.2f} nats, val perplexity {d['val_perplexity_relative']:+.1%}")


if __name__ == "__main__":
    run_stage(main)
