"""Where every stage's outputs live, relative to the repository root. dvc.yaml spells the same paths
(a test checks that the two agree), and no stage writes another stage's paths by hand."""
from pathlib import Path

DATA = Path("data")
RAW_CORPUS = DATA / "raw" / "input.txt"

TOKENS_DIR = DATA / "tokens"
TOKENS_BIN = TOKENS_DIR / "tokens.bin"  # uint16 ids of the whole corpus
TOKEN_OFFSETS = TOKENS_DIR / "offsets.npy"  # [byte, char] offset of every token boundary
TOKENS_META = TOKENS_DIR / "meta.json"

SPLIT_DIR = DATA / "split"
TRAIN_BIN = SPLIT_DIR / "train.bin"
VAL_BIN = SPLIT_DIR / "val.bin"
SPLIT_META = SPLIT_DIR / "split.json"

MODELS = Path("models")
PRETRAIN_DIR = MODELS / "pretrain"  # model.safetensors + config.json (see weights.py)

METRICS = Path("metrics")
PLOTS = Path("plots")
REPORTS = Path("reports")


def metrics_file(stage: str) -> Path:
    return METRICS / f"{stage}.json"


def plots_dir(stage: str) -> Path:
    return PLOTS / stage
