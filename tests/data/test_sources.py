"""Corpus sources beyond one URL: a folder or glob of text files, a Hugging Face dataset (saved with
save_to_disk, or data files load_dataset reads); each records what it read and fails clearly."""
import hashlib
import json

import datasets
import numpy as np
import pytest

from tinygpt.core.errors import ParamsError
from tinygpt.data.config import DataParams
from tinygpt.data.sources import CorpusSourceError, fetch_corpus
from tinygpt.data.tokens import read_document_index


def fetch(tmp_path, **data):
    params = DataParams(**data)
    params.validate()
    out = tmp_path / "out"
    summary = fetch_corpus(params, out / "input.txt", out / "documents.npy")
    return summary, (out / "input.txt").read_bytes(), read_document_index(out / "documents.npy", "download")


@pytest.fixture
def corpus_dir(tmp_path, monkeypatch):
    """A project-like folder whose data/corpus holds the test's files (the cwd, as for a stage)."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "data" / "corpus"
    folder.mkdir(parents=True)
    return folder


def test_a_folder_gives_one_document_per_text_file_in_sorted_order(tmp_path, corpus_dir):
    (corpus_dir / "b").mkdir()
    (corpus_dir / "b" / "two.txt").write_text("second file\n")
    (corpus_dir / "a.txt").write_text("first file\n")
    (corpus_dir / "empty.txt").write_text("")
    (corpus_dir / "notes.md").write_text("not a .txt, not read")
    summary, text, index = fetch(tmp_path, source="files", files="data/corpus")
    assert text == b"first file\nsecond file\n"
    assert index.tolist() == [0, 11, 23]
    assert summary.documents == 2 and summary.empty_skipped == 1 and summary.bytes == 23
    assert summary.sha256 == hashlib.sha256(text).hexdigest()
    assert [f["path"] for f in summary.details["files"]] == ["data/corpus/a.txt", "data/corpus/b/two.txt",
                                                               "data/corpus/empty.txt"]


def test_a_glob_selects_files(tmp_path, corpus_dir):
    (corpus_dir / "x.md").write_text("markdown\n")
    (corpus_dir / "y.txt").write_text("text\n")
    summary, text, _ = fetch(tmp_path, source="files", files="data/corpus/**/*.md")
    assert text == b"markdown\n" and summary.documents == 1


def test_file_source_errors_name_the_problem(tmp_path, corpus_dir):
    with pytest.raises(CorpusSourceError, match="data.files = 'data/corpus' matches no text files"):
        fetch(tmp_path, source="files", files="data/corpus")
    (corpus_dir / "bad.txt").write_bytes(b"caf\xe9")
    with pytest.raises(CorpusSourceError, match="bad.txt: not UTF-8"):
        fetch(tmp_path, source="files", files="data/corpus")
    (corpus_dir / "bad.txt").write_text("")
    with pytest.raises(CorpusSourceError, match="every document is empty"):
        fetch(tmp_path, source="files", files="data/corpus")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("files", ["/tmp/corpus", "corpus/*.txt", "data/corpus/../../etc", "data/raw"])
def test_local_files_must_be_inside_the_corpus_folder(files):
    with pytest.raises(ParamsError, match="data.files"):
        DataParams(source="files", files=files).validate()


def test_a_saved_hugging_face_dataset(tmp_path, corpus_dir):
    rows = {"text": ["First row.\n", "", "Second row.\n"], "label": [0, 1, 2]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                          "test": datasets.Dataset.from_dict({"text": ["held out\n"], "label": [3]})}
                         ).save_to_disk(str(corpus_dir / "ds"))
    summary, text, index = fetch(tmp_path, source="hf", hf_path="data/corpus/ds")
    assert text == b"First row.\nSecond row.\n" and index.tolist() == [0, 11, 23]
    assert summary.empty_skipped == 1 and summary.details["rows"] == 3 and summary.details["fingerprint"]
    _, test_text, _ = fetch(tmp_path, source="hf", hf_path="data/corpus/ds", hf_split="test")
    assert test_text == b"held out\n"
    with pytest.raises(CorpusSourceError, match="no split 'validation'"):
        fetch(tmp_path, source="hf", hf_path="data/corpus/ds", hf_split="validation")
    with pytest.raises(CorpusSourceError, match="data.text_column = 'body' is not a column"):
        fetch(tmp_path, source="hf", hf_path="data/corpus/ds", text_column="body")
    with pytest.raises(CorpusSourceError, match="data.text_column = 'label' holds"):
        fetch(tmp_path, source="hf", hf_path="data/corpus/ds", text_column="label")


def test_data_files_through_load_dataset(tmp_path, corpus_dir):
    """A folder of JSON lines goes through datasets.load_dataset, the code that also loads hub ids."""
    folder = corpus_dir / "jsonl"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"content": t}) + "\n" for t in ["alpha\n", "beta\n"]))
    summary, text, index = fetch(tmp_path, source="hf", hf_path="data/corpus/jsonl", text_column="content")
    assert text == b"alpha\nbeta\n" and index.tolist() == [0, 6, 11] and summary.details["kind"] == "hf"


def test_an_unknown_hub_id_fails_clearly(tmp_path, corpus_dir, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # read from the environment at import time
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CorpusSourceError, match="data.hf_path = 'nobody/no-such-dataset': could not load"):
        fetch(tmp_path, source="hf", hf_path="nobody/no-such-dataset")


def test_a_hub_dataset_whose_cached_files_fail_their_hash_is_refused(tmp_path, corpus_dir, monkeypatch):
    """load_dataset of a hub id (stubbed: no hub here) is followed by re-hashing the repo's cached files."""
    import huggingface_hub.constants
    from support import fake_hub_repo

    cache = tmp_path / "hub"
    snapshot = fake_hub_repo(cache, "org/rows", {"data/train.parquet": b"PAR1 rows"}, repo_type="dataset")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda *args, **kwargs: datasets.Dataset.from_dict({"text": ["alpha\n", "beta\n"]}))
    summary, text, index = fetch(tmp_path, source="hf", hf_path="org/rows")
    assert text == b"alpha\nbeta\n"
    (snapshot / "data/train.parquet").resolve().write_bytes(b"PAR1 swapped")
    with pytest.raises(CorpusSourceError, match="data.hf_path = 'org/rows': .*data/train.parquet .*download again"):
        fetch(tmp_path, source="hf", hf_path="org/rows")


def test_the_url_source_is_one_document(tmp_path, shakespeare_path):
    summary, text, index = fetch(tmp_path, url=str(shakespeare_path), mirrors=[])
    assert index.tolist() == [0, len(text)] and summary.documents == 1 and summary.source == str(shakespeare_path)
    assert np.isclose(len(text), 1_115_394, atol=1000)
