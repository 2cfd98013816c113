"""Tokens/s and peak memory of the tokenize stage's encoder (parallel over cores, streamed to disk)
against a single-process loop of `encode_ordinary` over the documents, side by side on one corpus.

    python benchmarks/tokenize_speed.py                   # a 200 MB corpus, generated
    python benchmarks/tokenize_speed.py --megabytes 50 --document-kb 64

The corpus is generated from the lines of Tiny Shakespeare (../shared/corpora or data/raw/input.txt),
shuffled with a seed into documents of about --document-kb, until it holds --megabytes. Each method runs
in its own process, so that its peak resident memory (ru_maxrss) is its own; both write uint16 ids, and
the run checks that the two files are identical before printing the ratios.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tinygpt.data import tokenizer
from tinygpt.data.corpus_tokens import TokenFiles, tokenize_corpus

SOURCES = [Path("../shared/corpora/tinyshakespeare.txt"), Path("data/raw/input.txt")]


def generate(path: Path, megabytes: float, document_kb: float, seed: int) -> np.ndarray:
    """Write the corpus; return the byte offset of each document's start, then the total."""
    source = next((p for p in SOURCES if p.exists()), None)
    if source is None:
        sys.exit("error: no Tiny Shakespeare copy at ../shared/corpora/ or data/raw/input.txt; run `dvc repro download`")
    lines = source.read_text().splitlines(keepends=True)
    rng = np.random.default_rng(seed)
    target, starts = int(megabytes * 1e6), [0]
    with path.open("wb") as out:
        while starts[-1] < target:
            document, size = [], 0
            while size < document_kb * 1000:
                line = lines[rng.integers(len(lines))]
                document.append(line)
                size += len(line.encode())
            data = "".join(document).encode()
            out.write(data)
            starts.append(starts[-1] + len(data))
    return np.asarray(starts, dtype=np.int64)


def baseline(text_path: Path, starts: np.ndarray, out: Path) -> int:
    """The plain way: read the corpus into memory, encode document by document on one thread."""
    encoding = tokenizer.gpt2_encoding()
    raw = text_path.read_bytes()
    ids: list[int] = []
    for a, b in zip(starts[:-1], starts[1:]):
        ids.extend(encoding.encode_ordinary(raw[a:b].decode()))
        ids.append(tokenizer.EOT_ID)
    np.asarray(ids, dtype=np.uint16).tofile(out)
    return len(ids)


def streamed(text_path: Path, starts: np.ndarray, out: Path) -> int:
    """The tokenize stage's encoder, with its defaults (threads: one per core, 16 MiB batches)."""
    files = TokenFiles(out, out.with_suffix(".offsets.npy"), out.with_suffix(".documents.npy"))
    return tokenize_corpus(text_path, starts, tokenizer.gpt2_encoding(), files, progress=False).tokens


def worker(method: str, folder: Path) -> None:
    starts = np.load(folder / "documents.npy")
    started = time.perf_counter()
    tokens = {"baseline": baseline, "streamed": streamed}[method](folder / "corpus.txt", starts, folder / f"{method}.bin")
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tokens": tokens, "seconds": seconds, "peak_mib": peak_mib}))


def run(method: str, folder: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", method, str(folder)], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"error: the {method} worker failed:\n{out.stderr}")
    return json.loads(out.stdout.splitlines()[-1])


def digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=200.0)
    parser.add_argument("--document-kb", type=float, default=64.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker[0], Path(args.worker[1]))
    with tempfile.TemporaryDirectory(prefix="tokenize-bench-") as tmp:
        folder = Path(tmp)
        starts = generate(folder / "corpus.txt", args.megabytes, args.document_kb, args.seed)
        np.save(folder / "documents.npy", starts)
        print(f"corpus: {starts[-1] / 1e6:.1f} MB in {len(starts) - 1:,} documents; {len(os.sched_getaffinity(0))} cores")
        results = {method: run(method, folder) for method in ("baseline", "streamed")}
        if digest(folder / "baseline.bin") != digest(folder / "streamed.bin"):
            sys.exit("error: the two methods wrote different ids")
    print(f"{'method':<10} {'tokens':>12} {'seconds':>8} {'tokens/s':>11} {'peak MiB':>9}")
    for method, r in results.items():
        print(f"{method:<10} {r['tokens']:>12,} {r['seconds']:>8.1f} {r['tokens'] / r['seconds']:>11,.0f} {r['peak_mib']:>9,.0f}")
    base, ours = results["baseline"], results["streamed"]
    print(f"ids identical; speed ratio streamed/baseline {base['seconds'] / ours['seconds']:.2f}x, "
          f"peak memory ratio {ours['peak_mib'] / base['peak_mib']:.2f}x")


if __name__ == "__main__":
    main()
