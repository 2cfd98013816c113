"""Token data: ids on disk, their byte/character offsets, and the train/val split (corpus_tokens.py writes them)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tiktoken

from tinygpt.core import io

TOKEN_DTYPE = np.uint16  # the dtype of GPT-2's ids on disk (token_dtype); the meta files record it
OFFSET_DTYPE = np.uint32  # byte offsets; corpora up to 4 GiB


def token_dtype(n_vocab: int) -> type:
    """uint16 while every id fits (GPT-2's 50257 do: half the disk and memory of uint32), else uint32."""
    return np.uint16 if n_vocab <= 1 << 16 else np.uint32


def token_byte_lengths(encoding: tiktoken.Encoding) -> np.ndarray:
    """UTF-8 length of every id's bytes, indexed by id."""
    return np.array(
        [len(encoding.decode_single_token_bytes(i)) for i in range(encoding.n_vocab)], dtype=np.int64
    )


def chars_before_bytes(raw: bytes) -> np.ndarray:
    """For each byte position 0..len(raw), how many characters start before it."""
    starts_char = (np.frombuffer(raw, dtype=np.uint8) & 0xC0) != 0x80  # not a continuation byte
    return np.concatenate([[0], np.cumsum(starts_char)])


@dataclass
class SplitPart:
    tokens: np.ndarray
    n_chars: int
    n_bytes: int

    def summary(self) -> dict[str, int]:
        return {"tokens": int(len(self.tokens)), "characters": self.n_chars, "bytes": self.n_bytes}


def split_tokens(
    tokens: np.ndarray, byte_offsets: np.ndarray, char_offsets: np.ndarray, val_fraction: float
) -> tuple[SplitPart, SplitPart, int]:
    """Cut the corpus into train then val at the token boundary nearest (1 - val_fraction) of the chars.

    nanoGPT and LLMs-from-scratch split the text at int(0.9 * n_chars) and tokenize each part; cutting
    the token stream at the nearest boundary reproduces their token counts, so numbers stay comparable.
    Returns (train, val, index of the first val token).
    """
    n_chars = int(char_offsets[-1])
    target = int(n_chars * (1.0 - val_fraction))
    # Boundaries strictly inside the corpus, so both parts are non-empty.
    inner = np.arange(1, len(tokens))
    if len(inner) == 0:
        raise ValueError("the corpus has fewer than 2 tokens; it cannot be split into train and val")
    cut = int(inner[np.argmin(np.abs(char_offsets[inner].astype(np.int64) - target))])
    train = SplitPart(tokens[:cut], int(char_offsets[cut]), int(byte_offsets[cut]))
    val = SplitPart(
        tokens[cut:], n_chars - int(char_offsets[cut]), int(byte_offsets[-1] - byte_offsets[cut])
    )
    return train, val, cut


def split_documents(
    tokens: np.ndarray, byte_offsets: np.ndarray, char_offsets: np.ndarray, document_starts: np.ndarray,
    val_fraction: float, seed: int,
) -> tuple[SplitPart, SplitPart, list[int]]:
    """Whole documents to val, drawn in a seeded random order until they hold val_fraction of the
    characters (at least one document, never all); the rest to train. Each part keeps corpus order.
    `document_starts` is the index of each document's first token, then len(tokens).
    Returns (train, val, indices of the val documents)."""
    n_docs = len(document_starts) - 1
    if n_docs < 2:
        raise ValueError("split_documents needs at least 2 documents")
    chars = np.diff(char_offsets[document_starts])
    order = np.random.default_rng(seed).permutation(n_docs)
    taken = int(np.searchsorted(np.cumsum(chars[order]), val_fraction * chars.sum())) + 1
    is_val = np.zeros(n_docs, dtype=bool)
    is_val[order[:min(taken, n_docs - 1)]] = True
    return (part_of(tokens, byte_offsets, char_offsets, document_starts, ~is_val),
            part_of(tokens, byte_offsets, char_offsets, document_starts, is_val), np.flatnonzero(is_val).tolist())


def part_of(tokens: np.ndarray, byte_offsets: np.ndarray, char_offsets: np.ndarray, document_starts: np.ndarray,
            chosen: np.ndarray) -> SplitPart:
    """The tokens of the chosen documents, in corpus order, with their character and byte counts."""
    starts, ends = document_starts[:-1][chosen], document_starts[1:][chosen]
    return SplitPart(np.concatenate([np.asarray(tokens[a:b]) for a, b in zip(starts, ends)]),
                     int((char_offsets[ends] - char_offsets[starts]).sum()),
                     int((byte_offsets[ends] - byte_offsets[starts]).sum()))


def write_tokens(path: Path, tokens: np.ndarray, dtype: str | type = TOKEN_DTYPE) -> None:
    """Ids as `dtype` (tokens.bin's, see token_dtype)."""
    io.write_array(path, np.asarray(tokens, dtype=dtype))


def read_tokens(path: Path, dtype: str | type = TOKEN_DTYPE) -> np.ndarray:
    """Memory-map a token file (no copy: the OS pages it in as needed)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run `dvc repro` to produce it")
    return np.memmap(path, dtype=dtype, mode="r")


def read_offsets(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(byte_offsets, char_offsets) of every token boundary."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run `dvc repro tokenize` to produce it")
    table = np.load(path, mmap_mode="r")
    return table[:, 0].astype(np.int64), table[:, 1].astype(np.int64)


def read_document_index(path: Path, stage: str) -> np.ndarray:
    """Where each document starts, then the end: bytes of data/raw/documents.npy (stage download) or token
    indices of data/tokens/documents.npy (stage tokenize)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run `dvc repro {stage}` to produce it")
    return np.load(path).astype(np.int64)
