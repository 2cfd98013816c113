"""Token data: the tokenized corpus, its byte/character offsets, and the train/val split."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tiktoken

from tinygpt.core import io
from tinygpt.core.errors import TinyGptError

TOKEN_DTYPE = np.uint16  # GPT-2's 50257 ids fit; half the disk and memory of int32
OFFSET_DTYPE = np.uint32  # byte offsets; corpora up to 4 GiB


def read_corpus(path: Path) -> str:
    """The raw corpus as text; it must be non-empty UTF-8."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run `dvc repro download` first")
    raw = path.read_bytes()
    if not raw:
        raise TinyGptError(f"{path}: empty; point data.url at the real corpus and rerun `dvc repro`")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TinyGptError(f"{path}: not UTF-8 text (byte {err.start}); point data.url at a UTF-8 corpus") from err


@dataclass
class TokenizedCorpus:
    tokens: np.ndarray  # (n_tokens,) uint16
    byte_offsets: np.ndarray  # (n_tokens + 1,) start of each token in the UTF-8 bytes, then the total
    char_offsets: np.ndarray  # (n_tokens + 1,) the same positions counted in characters
    n_chars: int
    n_bytes: int


def tokenize_text(text: str, encoding: tiktoken.Encoding) -> TokenizedCorpus:
    """Encode a whole corpus and record where every token starts, in bytes and in characters."""
    if not text:
        raise ValueError("the corpus is empty; nothing to tokenize")
    raw = text.encode("utf-8")
    # The corpus is data, not a chat template: '<|endoftext|>' inside it stays ordinary text.
    ids = np.asarray(encoding.encode_ordinary(text), dtype=np.int64)
    if ids.max() >= np.iinfo(TOKEN_DTYPE).max:
        raise ValueError(f"token id {ids.max()} does not fit in {TOKEN_DTYPE.__name__}")
    lengths = token_byte_lengths(encoding)[ids]
    byte_offsets = np.concatenate([[0], np.cumsum(lengths)])
    if byte_offsets[-1] != len(raw):
        raise AssertionError(f"token bytes add up to {byte_offsets[-1]}, the text has {len(raw)}")
    return TokenizedCorpus(
        tokens=ids.astype(TOKEN_DTYPE),
        byte_offsets=byte_offsets.astype(np.int64),
        char_offsets=chars_before_bytes(raw)[byte_offsets],
        n_chars=len(text),
        n_bytes=len(raw),
    )


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


def write_tokens(path: Path, tokens: np.ndarray) -> None:
    io.write_array(path, np.asarray(tokens, dtype=TOKEN_DTYPE))


def read_tokens(path: Path) -> np.ndarray:
    """Memory-map a uint16 token file (no copy: the OS pages it in as needed)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run `dvc repro` to produce it")
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r")


def write_offsets(path: Path, byte_offsets: np.ndarray, char_offsets: np.ndarray) -> None:
    """Token boundaries as an (n_tokens + 1, 2) array of [byte offset, character offset]."""
    table = np.stack([byte_offsets, char_offsets], axis=1).astype(OFFSET_DTYPE)
    with io.atomic_path(path) as tmp:
        with tmp.open("wb") as f:
            np.save(f, table)


def read_offsets(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(byte_offsets, char_offsets) of every token boundary."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run `dvc repro tokenize` to produce it")
    table = np.load(path).astype(np.int64)
    return table[:, 0], table[:, 1]
