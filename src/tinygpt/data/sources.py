"""Corpora made of many documents: a folder or glob of text files, or a Hugging Face dataset.

Whatever the source, the result has the shape the url source gives: one UTF-8 file of text (the
documents one after another) and the byte offset where each document starts, so that tokenization can
put an end-of-text token between documents and the split can keep documents whole. Both files are
streamed to temp paths and renamed into place only when every document has been read.
"""
from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from tinygpt.core import hub_integrity, io
from tinygpt.core.errors import TinyGptError
from tinygpt.data.config import DataParams
from tinygpt.data.download import download_corpus

DOCUMENT_DTYPE = np.int64  # byte offsets of document starts; any corpus size


class CorpusSourceError(TinyGptError):
    """The source holds no usable text."""


@dataclass
class CorpusSummary:
    """What the download stage read: logged and written to data/raw/manifest.json."""

    source: str  # where the text came from: the URL that answered, data.files, or data.hf_path
    documents: int = 0
    bytes: int = 0
    sha256: str = ""  # of data/raw/input.txt
    empty_skipped: int = 0
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"source": self.source, "documents": self.documents, "bytes": self.bytes, "sha256": self.sha256,
                "empty_documents_skipped": self.empty_skipped, **self.details}


def fetch_corpus(data: DataParams, text_path: Path, index_path: Path) -> CorpusSummary:
    """The corpus data.source names, as one text file plus its document index."""
    if data.source == "url":
        result = download_corpus([data.url, *data.mirrors], data.sha256, text_path, data.timeout_s)
        single_document_index(index_path, result.n_bytes)
        return CorpusSummary(result.source, documents=1, bytes=result.n_bytes, sha256=result.sha256,
                             details={"kind": "url", "attempts": result.attempts})
    if data.source == "files":
        summary = CorpusSummary(data.files, details={"kind": "files"})
        documents = file_documents(text_files(data.files), summary.details)
    else:
        summary = CorpusSummary(data.hf_path, details={"kind": "hf", "config": data.hf_config, "split": data.hf_split,
                                                        "revision": data.hf_revision})
        dataset = load_hf_dataset(data.hf_path, data.hf_config, data.hf_split, data.hf_revision)
        documents = hf_documents(dataset, data.text_column, summary.details)
    write_documents(documents, text_path, index_path, summary)
    return summary


def text_files(pattern: str) -> list[Path]:
    """The files a data.files value names: a folder's *.txt (recursively) or a glob's matches, sorted."""
    path = Path(pattern)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*.txt") if p.is_file())
    else:
        found = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not found:
        raise CorpusSourceError(
            f"data.files = {pattern!r} matches no text files; put .txt files in that folder or change the glob "
            "(e.g. data/corpus/**/*.md)")
    return found


def file_documents(files: list[Path], details: dict) -> Iterator[str]:
    """Each file's text as one document; records path, bytes and sha256 of each in `details`."""
    details["files"] = []
    for path in files:
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise CorpusSourceError(
                f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); convert it (iconv -t utf-8) or "
                "leave it out of data.files") from err
        details["files"].append({"path": str(path), "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()})
        yield text


def load_hf_dataset(path: str, config: str | None, split: str, revision: str | None):
    """A Hugging Face dataset split: from a `save_to_disk` folder, or through `load_dataset` (a hub id, or
    a folder of data files), which downloads from the hub and caches in ~/.cache/huggingface."""
    import datasets  # heavy; only this source needs it

    local = Path(path)
    if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists()):
        loaded = datasets.load_from_disk(str(local))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise CorpusSourceError(f"{path}: no split {split!r} (it has {', '.join(loaded)}); set data.hf_split")
            return loaded[split]
        return loaded
    try:
        dataset = datasets.load_dataset(path, name=config, split=split, revision=revision)
    except (FileNotFoundError, ValueError, ConnectionError) as err:
        raise CorpusSourceError(
            f"data.hf_path = {path!r}: could not load the dataset ({type(err).__name__}: {err}); check the hub id, "
            "data.hf_config and data.hf_split, or point data.hf_path at a local dataset folder") from err
    if not local.exists():  # a hub id: its downloaded files are re-hashed against their blob names
        try:
            hub_integrity.verify_cached_repo(path, "dataset")
        except hub_integrity.HubCacheCorrupt as err:
            raise CorpusSourceError(f"data.hf_path = {path!r}: {err}") from err
    return dataset


def hf_documents(dataset, column: str, details: dict) -> Iterator[str]:
    """The text column of every row, checked to be strings; records the dataset's identity in `details`."""
    if column not in dataset.column_names:
        raise CorpusSourceError(
            f"data.text_column = {column!r} is not a column of the dataset (columns: {', '.join(dataset.column_names)}); "
            "set data.text_column")
    feature = dataset.features[column]
    if getattr(feature, "dtype", None) not in ("string", "large_string"):
        raise CorpusSourceError(
            f"data.text_column = {column!r} holds {feature!r}, not text; choose a string column")
    details.update({"fingerprint": dataset._fingerprint, "rows": dataset.num_rows,
                    "dataset": getattr(dataset.info, "dataset_name", None), "column": column})
    for batch in dataset.iter(batch_size=1000):
        yield from batch[column]


def write_documents(documents: Iterable[str], text_path: Path, index_path: Path, summary: CorpusSummary) -> None:
    """Stream documents into one UTF-8 file and their start offsets (plus the total) into an .npy index;
    empty documents are skipped. Nothing is in place until both files are complete."""
    starts, hasher = [0], hashlib.sha256()
    with io.atomic_path(text_path) as tmp_text, io.atomic_path(index_path) as tmp_index:
        with tmp_text.open("wb") as out:
            for text in documents:
                if not text:
                    summary.empty_skipped += 1
                    continue
                data = text.encode("utf-8")
                out.write(data)
                hasher.update(data)
                starts.append(starts[-1] + len(data))
        if len(starts) == 1:
            raise CorpusSourceError(f"the source ({summary.source}) has no text: every document is empty")
        write_index(tmp_index, starts)
    summary.documents, summary.bytes, summary.sha256 = len(starts) - 1, starts[-1], hasher.hexdigest()


def write_index(path: Path, starts: list[int]) -> None:
    with Path(path).open("wb") as f:
        np.save(f, np.asarray(starts, dtype=DOCUMENT_DTYPE))


def single_document_index(path: Path, n_bytes: int) -> None:
    """The index of a one-file corpus (the url source): one document, the whole file."""
    with io.atomic_path(path) as tmp:
        write_index(tmp, [0, n_bytes])
