"""Branch-train-merge: the reference's ranked pairs split by prompt into M shards, one DPO run per shard
from the reference, the deltas averaged, scaled."""
import sys, dataclasses, numpy as np; sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from common import *
from tinygpt.rlhf import dpo
from tinygpt.rlhf.ranked_pairs import reward_ranked_pairs
M = int(sys.argv[1]); tag = sys.argv[2] if len(sys.argv) > 2 else f"b{M}"
d = p.dpo
extra = dict(a.split("=") for a in sys.argv[3:])
d = dataclasses.replace(d, **{k: type(getattr(d, k))(v) for k, v in extra.items()})
prompts = load_prompts(paths.PREFERENCE_PROMPTS, "train")
t = time.perf_counter()
pairs = reward_ranked_pairs(ref, task.reward_model, prompts, d.ranked_samples, p.preferences.continuation_tokens,
                            p.preferences.temperature, d.seed, precision, p.heldout.batch_size, d.ranked_pairs)
print("sampled", len(pairs), time.perf_counter() - t, flush=True)
corpus = read_tokens(paths.TRAIN_BIN)
# pairs are prompt-major: shard by prompt
prompt_index = np.repeat(np.arange(len(prompts)), d.ranked_pairs)[: len(pairs)]
if len(prompt_index) != len(pairs):
    raise SystemExit("dropped pairs; shard differently")
deltas, out = [], []
for b in range(M):
    rows = np.nonzero(prompt_index % M == b)[0]
    policy = load_model(paths.PRETRAIN_DIR, device)
    t = time.perf_counter()
    dpo.train_dpo(policy, ref, pairs.select(rows), dataclasses.replace(d, seed=d.seed + 101 * b), precision, corpus=corpus)
    print("branch", b, "trained", time.perf_counter() - t, flush=True)
    deltas.append(delta(policy))
    score(f"{tag} branch {b}", policy, out)
avg = {k: sum(x[k] for x in deltas) / M for k in deltas[0]}
for s in (1.0, 1.25, 1.5, 1.75, 2.0):
    score(f"{tag} avg x{s}", from_delta(avg, s), out)
torch.save(deltas, f"/tmp/{tag}_deltas.pt")
pd.DataFrame(out).to_csv(f"/tmp/{tag}.csv", index=False)
