import sys; sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from common import *
out = []
dpo = load_model(paths.DPO_DIR, device); ppo = load_model(paths.RLHF_DIR, device)
dd, dp = delta(dpo), delta(ppo)
for s in (0.5, 0.75, 1.0, 1.25):
    score(f"dpo x{s}", from_delta(dd, s), out)
for s in (0.5, 1.0):
    score(f"ppo x{s}", from_delta(dp, s), out)
avg = {k: (dd[k] + dp[k]) / 2 for k in dd}
for s in (1.0, 1.5, 2.0):
    score(f"(dpo+ppo)/2 x{s}", from_delta(avg, s), out)
pd.DataFrame(out).to_csv("/tmp/merge0.csv", index=False)
