"""Tokenize a corpus file of any size: in parallel over cores, streamed to disk in bounded memory.

The text is read through a memory map and encoded in batches of about `chunk_bytes`; each batch is a
list of pieces that tiktoken encodes on several threads at once (its Rust core releases the GIL). A
document longer than a piece is cut only where the cut cannot change the tokens: after a newline that
sits between two printable ASCII characters. GPT-2's pre-tokenizer makes such a newline a token of its
own and starts a fresh word after it, and BPE never merges across pre-tokens, so the ids are those of
encoding the whole document at once (tests/data/test_corpus_tokens.py checks it on Tiny Shakespeare).

With several documents, an end-of-text token follows each one, as GPT-2 was trained; it covers no bytes
of the text, so the byte and character offsets still index the raw file.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import tiktoken
from tqdm import tqdm

from tinygpt.core import io
from tinygpt.core.errors import TinyGptError
from tinygpt.data.tokens import OFFSET_DTYPE, chars_before_bytes, token_byte_lengths, token_dtype

PIECE_BYTES = 1 << 18  # 256 KiB: several pieces per batch keep every thread busy
LOOKAHEAD = 1 << 16  # bytes searched at a time for a safe cut
NEWLINE = 0x0A


@dataclass
class TokenFiles:
    tokens: Path  # the ids, raw, uint16 or uint32
    offsets: Path  # .npy (n_tokens + 1, 2): [byte, character] offset of every token boundary
    documents: Path  # .npy (n_documents + 1,): index of each document's first token, then n_tokens


@dataclass
class TokenizeSummary:
    tokens: int
    characters: int
    bytes: int
    documents: int
    distinct_tokens: int
    dtype: str


def tokenize_corpus(text_path: Path, document_starts: np.ndarray, encoding: tiktoken.Encoding, out: TokenFiles,
                    threads: int = 0, chunk_bytes: int = 16 << 20, progress: bool = True) -> TokenizeSummary:
    """Encode the documents of `text_path` (byte ranges between consecutive `document_starts`) into `out`."""
    raw = np.memmap(text_path, dtype=np.uint8, mode="r") if Path(text_path).stat().st_size else np.zeros(0, np.uint8)
    if len(raw) == 0:
        raise TinyGptError(f"{text_path}: empty; point data.* at a corpus with text and rerun `dvc repro`")
    if document_starts[-1] != len(raw):
        raise TinyGptError(f"{text_path}: {len(raw)} bytes, but its document index says {document_starts[-1]}; "
                           "rerun `dvc repro download`")
    if len(raw) >= np.iinfo(OFFSET_DTYPE).max:
        raise TinyGptError(f"{text_path}: {len(raw)} bytes; token offsets are stored as uint32 (corpora < 4 GiB)")
    dtype = token_dtype(encoding.n_vocab)
    n_docs = len(document_starts) - 1
    separator = encoding.eot_token if n_docs > 1 else None
    lengths = token_byte_lengths(encoding)
    if separator is not None:
        lengths[separator] = 0  # a boundary marker, not text
    threads = threads or len(os.sched_getaffinity(0))
    writer = StreamWriter(out, dtype, encoding.n_vocab)
    with writer, tqdm(total=len(raw), unit="B", unit_scale=True, desc="tokenize", disable=not progress) as bar:
        for batch in piece_batches(raw, document_starts, chunk_bytes):
            texts = [decoded(raw, start, end, text_path) for start, end, _ in batch]
            for (start, end, ends_document), ids in zip(batch, encoding.encode_ordinary_batch(texts, num_threads=threads)):
                writer.add(np.asarray(ids, dtype=np.int64), raw[start:end], lengths)
                if ends_document:
                    if separator is not None:
                        writer.add(np.array([separator]), raw[end:end], lengths)
                    writer.end_document()
            bar.update(sum(end - start for start, end, _ in batch))
    return TokenizeSummary(tokens=writer.n_tokens, characters=writer.n_chars, bytes=writer.n_bytes, documents=n_docs,
                           distinct_tokens=int(np.count_nonzero(writer.counts)), dtype=np.dtype(dtype).name)


def decoded(raw: np.ndarray, start: int, end: int, text_path: Path) -> str:
    try:
        return bytes(raw[start:end]).decode("utf-8")
    except UnicodeDecodeError as err:
        raise TinyGptError(f"{text_path}: not UTF-8 text (byte {start + err.start}: {err.reason}); "
                           "rerun `dvc repro download`, which checks the corpus") from err


def piece_batches(raw: np.ndarray, document_starts: np.ndarray, chunk_bytes: int) -> Iterator[list[tuple[int, int, bool]]]:
    """Lists of pieces (start, end, whether the piece ends its document) totalling about chunk_bytes."""
    batch, size = [], 0
    for doc_start, doc_end in zip(document_starts[:-1].tolist(), document_starts[1:].tolist()):
        for start, end in pieces(raw, doc_start, doc_end):
            batch.append((start, end, end == doc_end))
            size += end - start
            if size >= chunk_bytes:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


def pieces(raw: np.ndarray, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Cut the document raw[start:end] into pieces of about PIECE_BYTES at safe cuts."""
    while end - start > PIECE_BYTES:
        cut = safe_cut(raw, start + PIECE_BYTES, end)
        if cut is None:
            break
        yield start, cut
        start = cut
    yield start, end


def safe_cut(raw: np.ndarray, after: int, end: int) -> int | None:
    """The first position p >= `after` (and < end) with raw[p-1] a newline and raw[p-2], raw[p] printable
    ASCII (no whitespace): cutting there leaves the tokens unchanged. None if there is none."""
    lo = max(after, 2)
    while lo < end:
        hi = min(lo + LOOKAHEAD, end)
        window = raw[lo - 2:hi]
        printable = (window > 0x20) & (window < 0x7F)
        ok = (window[1:-1] == NEWLINE) & printable[:-2] & printable[2:]
        hits = np.flatnonzero(ok)
        if len(hits):
            return lo + int(hits[0])  # window[1 + i] is the newline at position lo - 1 + i, the cut is after it
        lo = hi
    return None


class StreamWriter:
    """Appends ids and their offsets to temp files; on a clean exit renames the outputs into place."""

    def __init__(self, out: TokenFiles, dtype, n_vocab: int):
        self.out, self.dtype = out, dtype
        self.n_tokens = self.n_bytes = self.n_chars = 0
        self.counts = np.zeros(n_vocab, dtype=np.int64)
        self.document_token_starts = [0]

    def __enter__(self) -> "StreamWriter":
        self.stack = contextlib.ExitStack()  # renames the three temp files into place, or deletes them
        self.tmp_tokens, self.tmp_offsets, self.tmp_documents = [
            self.stack.enter_context(io.atomic_path(p)) for p in (self.out.tokens, self.out.offsets, self.out.documents)]
        self.offset_rows = self.tmp_offsets.with_suffix(".rows")
        self.tokens_file = self.tmp_tokens.open("wb")
        self.offsets_file = self.offset_rows.open("wb")
        return self

    def add(self, ids: np.ndarray, text: np.ndarray, lengths: np.ndarray) -> None:
        """Ids of one piece of text (raw bytes); each id's boundary is written as [byte, char] of its start."""
        local_bytes = np.concatenate([[0], np.cumsum(lengths[ids])])
        if local_bytes[-1] != len(text):
            raise AssertionError(f"token bytes add up to {local_bytes[-1]}, the piece has {len(text)}")
        local_chars = chars_before_bytes(bytes(text))[local_bytes]
        starts = np.stack([local_bytes[:-1] + self.n_bytes, local_chars[:-1] + self.n_chars], axis=1)
        self.offsets_file.write(starts.astype(OFFSET_DTYPE).tobytes())
        self.tokens_file.write(ids.astype(self.dtype).tobytes())
        self.counts += np.bincount(ids, minlength=len(self.counts))
        self.n_tokens += len(ids)
        self.n_bytes += len(text)
        self.n_chars += int(local_chars[-1])

    def end_document(self) -> None:
        self.document_token_starts.append(self.n_tokens)

    def __exit__(self, kind, error, trace) -> None:
        with self.stack:
            self.tokens_file.close()
            self.offsets_file.close()
            try:
                if error is not None:
                    raise error  # inside the stack, so that the temp files are deleted, not renamed
                self.write_offsets_npy()
                with self.tmp_documents.open("wb") as f:
                    np.save(f, np.asarray(self.document_token_starts, dtype=np.int64))
            finally:
                self.offset_rows.unlink(missing_ok=True)

    def write_offsets_npy(self) -> None:
        """The .npy of the boundaries: a header for (n_tokens + 1, 2), the streamed rows, then the end."""
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(OFFSET_DTYPE)), "fortran_order": False,
                  "shape": (self.n_tokens + 1, 2)}
        with self.tmp_offsets.open("wb") as f, self.offset_rows.open("rb") as rows:
            np.lib.format.write_array_header_1_0(f, header)
            shutil.copyfileobj(rows, f, 1 << 20)
            f.write(np.array([[self.n_bytes, self.n_chars]], dtype=OFFSET_DTYPE).tobytes())
