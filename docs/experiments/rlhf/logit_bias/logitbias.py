"""DPO with a trainable per-token logit bias (over the compact head's rows), alone or with the blocks."""
import sys, os, dataclasses, numpy as np; sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from common import *
from datasets import load_from_disk
from tinygpt.rlhf import dpo
from tinygpt.model.heads import CompactHead
from tinygpt.rlhf.ranked_pairs import reward_ranked_pairs
from tinygpt.rlhf.finetune import freeze_embeddings

_orig = CompactHead._scaled
def _scaled(self, hidden, temperature):
    out = _orig(self, hidden, temperature)
    b = getattr(self.model, "row_bias", None)
    return out if b is None else out + b.float() / temperature
CompactHead._scaled = _scaled

tag, scope, bias_lr = sys.argv[1], sys.argv[2], float(sys.argv[3])
extra = dict(a.split("=") for a in sys.argv[4:])
d = p.dpo
d = dataclasses.replace(d, **{k: type(getattr(d, k))(v) for k, v in extra.items()})
cache = f"/tmp/pairs_seed{d.seed}_{d.ranked_samples}_{d.ranked_pairs}"
if os.path.exists(cache):
    pairs = load_from_disk(cache)
else:
    prompts = load_prompts(paths.PREFERENCE_PROMPTS, "train")
    pairs = reward_ranked_pairs(ref, task.reward_model, prompts, d.ranked_samples, p.preferences.continuation_tokens,
                                p.preferences.temperature, d.seed, precision, p.heldout.batch_size, d.ranked_pairs)
    pairs.save_to_disk(cache)

def optimizer_for(policy, learning_rate, logit_bias_lr=0.0):  # this script's bias, not GPT's
    freeze_embeddings(policy)
    if scope == "none":
        for w in policy.parameters():
            w.requires_grad_(False)
    rows = CompactHead.of(policy).rows
    policy.row_bias = torch.nn.Parameter(torch.zeros(len(rows), device=rows.device))
    groups = [{"params": [w for n, w in policy.named_parameters() if w.requires_grad and n != "row_bias"], "lr": learning_rate}]
    groups = [g for g in groups if g["params"]] + [{"params": [policy.row_bias], "lr": bias_lr}]
    return torch.optim.Adam(groups)
dpo.dpo_optimizer = optimizer_for

out = []
policy = load_model(paths.PRETRAIN_DIR, device)
def on_eval(step, model):
    if step > 0:
        score(f"{tag} step {step}", model, out)
t = time.perf_counter()
dpo.train_dpo(policy, ref, pairs, d, precision, on_eval=on_eval, corpus=read_tokens(paths.TRAIN_BIN))
print("trained+evals", time.perf_counter() - t)
b = policy.row_bias.detach()
print("bias: mean", b.mean().item(), "std", b.std().item(), "max", b.max().item(), "min", b.min().item())
from tinygpt.data.tokenizer import decode
h = CompactHead.of(policy)
top = torch.argsort(b, descending=True)[:30]
print("top", [decode([int(h.ids_by_row[h.first_of_row[r]])]) for r in top])
bot = torch.argsort(b)[:20]
print("bottom", [decode([int(h.ids_by_row[h.first_of_row[r]])]) for r in bot])
pd.DataFrame(out).to_csv(f"/tmp/{tag}.csv", index=False)
