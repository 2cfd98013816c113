"""Shared set-up of the screening scripts behind docs/experiments.md, "DPO with a per-token logit bias": the
pipeline's pretrained model, reward model, held-out prompts and best-of-n curve, and a scorer printing each
model's held-out KL, gold gain, proxy gain, perplexity change and gap to best-of-n. Run from the repository
root after `dvc repro best_of_n`, e.g. `python docs/experiments/rlhf/logit_bias/logitbias.py lb_blocks blocks
1e-2 eval_interval=192` (they were run before dpo.logit_bias_lr existed: logitbias.py patches a bias over
the compact head's rows into the model, which is what dpo.logit_bias_lr now does with GPT.add_logit_bias)."""
import sys, json, time, copy
import torch, pandas as pd
from tinygpt.core.device import resolve_device, resolve_precision
from tinygpt.data.tokens import read_tokens
from tinygpt.model.weights import load_model
from tinygpt.pipeline import params, paths
from tinygpt.rlhf.finetune import frozen_copy
from tinygpt.rlhf.frontier import frontier_rows, against_best_of_n
from tinygpt.rlhf.heldout import EvalTask, evaluate
from tinygpt.rlhf.oracles import Oracle
from tinygpt.rlhf.preferences import load_prompts
from tinygpt.rlhf.reward_model import load_reward_model

p = params.load_sections("dpo", "heldout", "preferences", "tracking")
device = resolve_device("auto"); precision = resolve_precision("auto", device)
ref = load_model(paths.PRETRAIN_DIR, device); ref.requires_grad_(False)
task = EvalTask(reward_model=load_reward_model(paths.REWARD_DIR, device).requires_grad_(False),
    prompts={n: torch.as_tensor(load_prompts(paths.PREFERENCE_PROMPTS, n), device=device) for n in ("selection", "report")},
    val_tokens=read_tokens(paths.VAL_BIN), heldout_params=p.heldout,
    max_new_tokens=p.preferences.continuation_tokens,
    oracle=Oracle(p.preferences.oracle, p.preferences.keyword), precision=precision)
reference_eval = evaluate(ref, ref, task)
bon = pd.read_csv("plots/best_of_n/curve.csv")
ref_state = {k: v.clone() for k, v in ref.state_dict().items()}

def delta(model):
    return {k: v.detach() - ref_state[k] for k, v in model.state_dict().items()}

def from_delta(d, scale=1.0):
    m = copy.deepcopy(ref)
    m.load_state_dict({k: ref_state[k] + scale * d[k] for k in ref_state})
    return m

def score(name, model, out):
    ev = evaluate(model, ref, task)
    for row in frontier_rows(0, reference_eval, ev):
        row.update(against_best_of_n(row, bon[bon["set"] == row["set"]]))
        row["run"] = name
        out.append(row)
        print(f"{name:40s} {row['set']:9s} KL {row['kl']:5.2f} gold {row['gold_gain']:+.3f} proxy {row['proxy_gain']:.2f} ppl {row['val_perplexity_relative']:+.1%} gap {row['gain_over_best_of_n']:+.3f}", flush=True)
