"""Where every stage's outputs live, relative to the repository root. dvc.yaml spells the same paths
(a test checks that the two agree), and no stage writes another stage's paths by hand."""
from pathlib import Path

from tinygpt.data import config as data_config

DATA = Path("data")
PARAMS_CHECKED = DATA / "params" / "checked.txt"  # same text whenever params.yaml is valid (check_params)
RAW_CORPUS = DATA / "raw" / "input.txt"  # the documents' text, one after another
RAW_DOCUMENTS = DATA / "raw" / "documents.npy"  # byte offset where each document starts, then the total
RAW_MANIFEST = DATA / "raw" / "manifest.json"  # what the download stage read: files, dataset fingerprint, bytes
CORPUS_FOLDER = Path(data_config.CORPUS_FOLDER)  # local corpora (data.files, a local data.hf_path); a dep of download

TOKENS_DIR = DATA / "tokens"
TOKENS_BIN = TOKENS_DIR / "tokens.bin"  # ids of the whole corpus, uint16 (meta.json says)
TOKEN_OFFSETS = TOKENS_DIR / "offsets.npy"  # [byte, char] offset of every token boundary
TOKEN_DOCUMENTS = TOKENS_DIR / "documents.npy"  # index of each document's first token, then the total
TOKENS_META = TOKENS_DIR / "meta.json"

SPLIT_DIR = DATA / "split"
TRAIN_BIN = SPLIT_DIR / "train.bin"
VAL_BIN = SPLIT_DIR / "val.bin"
SPLIT_META = SPLIT_DIR / "split.json"

MODELS = Path("models")
PRETRAIN_DIR = MODELS / "pretrain"  # model.safetensors + config.json (see weights.py)

# RLHF (stages preferences, reward, best_of_n, rlhf, dpo, frontier)
PREFERENCES_DIR = DATA / "preferences"
PREFERENCE_PAIRS = PREFERENCES_DIR / "pairs"  # datasets DatasetDict: train, selection, report
PREFERENCE_PROMPTS = PREFERENCES_DIR / "prompts"  # datasets DatasetDict: train, selection, report
REWARD_DIR = MODELS / "reward"  # trunk (weights.py format) + head.safetensors with the normalisation
RLHF_DIR = MODELS / "rlhf"  # the PPO policy's GPT at the reported step (weights.py format)
DPO_DIR = MODELS / "dpo"  # the DPO policy's GPT at the reported step
SFT_DIR = MODELS / "sft"  # the pretrained GPT finetuned on dialogue replies (weights.py format)


def start_model_dir(start_model: str) -> Path:
    """The model the RLHF stages start from (preferences.start_model): models/pretrain or models/sft, as
    dvc.yaml's `models/${preferences.start_model}` dep names it."""
    return MODELS / start_model

BEST_OF_N_DIR = DATA / "best_of_n"
BEST_OF_N_SCORES = BEST_OF_N_DIR / "scores.csv"  # every reference sample: set, prompt, sample, gold, proxy
BEST_OF_N_PER_PROMPT = BEST_OF_N_DIR / "per_prompt.csv"  # per set, prompt and n: expected golds, one actual pick

# The names the MLflow runs table's Dataset column gives the inputs a stage reads (see tracking.log_dataset).
DATASET_NAMES = {
    RAW_CORPUS: "corpus", TOKENS_BIN: "corpus tokens", TRAIN_BIN: "train split", VAL_BIN: "val split",
    PREFERENCE_PAIRS: "preference pairs", PREFERENCE_PROMPTS: "preference prompts",
}

METRICS = Path("metrics")
PLOTS = Path("plots")
REPORTS = Path("reports")
SUMMARY_MD = REPORTS / "summary.md"  # the whole pipeline on one page (report stage)
DASHBOARD_HTML = REPORTS / "dashboard.html"  # the same, self-contained HTML with figures inlined


def metrics_file(stage: str) -> Path:
    return METRICS / f"{stage}.json"


def plots_dir(stage: str) -> Path:
    return PLOTS / stage


# pretrain
PRETRAIN_CACHE = Path(".cache") / "pretrain"  # checkpoints per configuration; outside DVC's outs (see checkpoint.py)
PRETRAIN_PLOTS = plots_dir("pretrain")
PRETRAIN_STEPS_CSV = PRETRAIN_PLOTS / "steps.csv"  # per step: loss, lr, grad_norm, tokens_seen, tokens_per_s
PRETRAIN_EVAL_CSV = PRETRAIN_PLOTS / "eval.csv"  # per evaluation: train/val loss and perplexity on fixed batches
PRETRAIN_STEPS_PNG = PRETRAIN_PLOTS / "steps.png"
PRETRAIN_EVAL_PNG = PRETRAIN_PLOTS / "eval.png"


# evaluate (file names are reused by the compare stage inside its own folders)
EVALUATE_PLOTS = plots_dir("evaluate")
RELIABILITY_CSV = EVALUATE_PLOTS / "reliability.csv"  # val calibration bins; DVC plot confidence vs accuracy
RELIABILITY_PNG = EVALUATE_PLOTS / "reliability.png"  # reliability diagram + confidence histogram
EVALUATE_REPORTS = REPORTS / "evaluate"
NEXT_TOKENS_JSON = EVALUATE_REPORTS / "next_tokens.json"  # top-k next tokens per eval.prompts
NEXT_TOKENS_MD = EVALUATE_REPORTS / "next_tokens.md"
SAMPLES_JSON = EVALUATE_REPORTS / "samples.json"  # one sampled continuation per prompt
SAMPLES_MD = EVALUATE_REPORTS / "samples.md"


# compare (our model against Hugging Face's GPT-2)
HF_DIR = MODELS / "hf"  # our trained model as a Hugging Face directory (transformers.pipeline loads it)
COMPARE_PLOTS = plots_dir("compare")  # reliability_overlay.png, and per model <label>/reliability.{csv,png}
RELIABILITY_OVERLAY_PNG = COMPARE_PLOTS / "reliability_overlay.png"
COMPARE_REPORTS = REPORTS / "compare"  # table, and per model <label>/ next tokens and samples
COMPARE_TABLE_CSV = COMPARE_REPORTS / "table.csv"
COMPARE_TABLE_MD = COMPARE_REPORTS / "table.md"


# preferences, reward, rlhf (their data and models: PREFERENCES_DIR, REWARD_DIR, RLHF_DIR above)
REWARD_PLOTS = plots_dir("reward")
REWARD_STEPS_CSV = REWARD_PLOTS / "steps.csv"  # per step: Bradley-Terry loss, pair accuracy, grad_norm, lr
REWARD_STEPS_PNG = REWARD_PLOTS / "steps.png"
RLHF_PLOTS = plots_dir("rlhf")
RLHF_STEPS_CSV = RLHF_PLOTS / "steps.csv"  # per PPO step: proxy and gold score, KL, beta, entropy, losses, ...
RLHF_STEPS_PNG = RLHF_PLOTS / "steps.png"
RLHF_PROXY_GOLD_PNG = RLHF_PLOTS / "proxy_vs_gold.png"  # reward hacking shows as the two drifting apart
RLHF_REPORTS = REPORTS / "rlhf"
RLHF_SAMPLES_MD = RLHF_REPORTS / "samples.md"  # held-out continuations before and after
RLHF_SAMPLES_CSV = RLHF_REPORTS / "samples.csv"  # every held-out sample of the reported point, scored
RLHF_FRONTIER_CSV = RLHF_PLOTS / "frontier.csv"  # per evaluation and held-out set: KL, gold and proxy gain, ...
BEST_OF_N_CURVE_CSV = plots_dir("best_of_n") / "curve.csv"  # per set and n: analytic KL, gold and proxy gain
SOFT_BEST_OF_N_CSV = plots_dir("best_of_n") / "soft.csv"  # per set and beta: soft best-of-max_n's KL bound and gains
SFT_PLOTS = plots_dir("sft")
SFT_STEPS_CSV = SFT_PLOTS / "steps.csv"  # per step: reply loss, lr, grad_norm
SFT_STEPS_PNG = SFT_PLOTS / "steps.png"
SFT_HELDOUT_CSV = SFT_PLOTS / "heldout.csv"  # per evaluation: the selection pairs' reply NLL
SFT_REPORTS = REPORTS / "sft"
SFT_SAMPLES_MD = SFT_REPORTS / "samples.md"  # report-set prompts: the pretrained model's reply, then the SFT model's
DPO_PLOTS = plots_dir("dpo")
DPO_STEPS_CSV = DPO_PLOTS / "steps.csv"  # per DPO step: loss, implicit-reward accuracy and margin, lr
DPO_STEPS_PNG = DPO_PLOTS / "steps.png"
DPO_FRONTIER_CSV = DPO_PLOTS / "frontier.csv"
DPO_REPORTS = REPORTS / "dpo"
DPO_SAMPLES_MD = DPO_REPORTS / "samples.md"
DPO_SAMPLES_CSV = DPO_REPORTS / "samples.csv"
FRONTIER_PLOTS = plots_dir("frontier")
FRONTIER_PNG = FRONTIER_PLOTS / "gold_vs_kl.png"  # report set: best-of-n, PPO and DPO on one figure
FRONTIER_POINTS_CSV = FRONTIER_PLOTS / "points.csv"  # the same points as one table, for `dvc plots`
FRONTIER_REPORTS = REPORTS / "frontier"
FRONTIER_TABLE_MD = FRONTIER_REPORTS / "table.md"
FRONTIER_SAMPLES_MD = FRONTIER_REPORTS / "samples.md"  # reference, best-of-n, PPO, DPO on the same prompts (docs/frontier_samples.md: the committed run's)
