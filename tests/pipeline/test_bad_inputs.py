"""Bad inputs, one table: each case runs a real entry point (`dvc repro` in a copy of the finished tiny
project, or the `tinygpt` command) and must end with a non-zero exit, one `error:` message that names
the key or file and says how to fix it, no traceback, no partial output, and every earlier output intact:
the other stages' files untouched, and the failing stage's own restored by `dvc checkout` once the input
is put back (DVC clears a stage's outputs before running it; the last good ones stay in its cache)."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml
from support import copy_finished, declared_paths, dvc, set_params

TINYGPT = str(Path(sys.executable).parent / "tinygpt")
CASE_DIR = "case"  # where a case writes the bad files it hands to the CLI (not a pipeline output)
LONG_PROMPT = "ROMEO: " + "speak, " * 60  # ~120 tokens, the tiny model's context is 16


@dataclass
class Case:
    name: str
    says: tuple[str, ...]  # each is in the error message: the key or file at fault, and the fix
    run: tuple[str, ...] = ("dvc", "repro")
    params: dict | None = None  # section -> {key: value}, merged into params.yaml
    edit: Callable[[dict], None] | None = None  # changes the loaded params.yaml in place
    raw_params: str | None = None  # or params.yaml's whole text
    setup: Callable[[Path, object], dict | None] | None = None  # writes bad files; may return params to merge
    by_dvc: bool = False  # DVC itself refuses (it reads params.yaml first): its one ERROR line is the message

    def __str__(self) -> str:
        return self.name


# ---------------------------------------------------------------- what the cases write


def corpus_bytes(project: Path) -> bytes:
    return Path(yaml.safe_load((project / "params.yaml").read_text())["data"]["url"]).read_bytes()


def served(path: str, body: Callable[[Path], bytes] | bytes, sha_of: bytes | None = None, **serve_options):
    """setup: serve a body on the loopback server and point data.url (and, given `sha_of`, data.sha256) at it."""
    def setup(project, server):
        content = body(project) if callable(body) else body
        url = server.serve(path, content, **serve_options)
        data = {"url": url, "mirrors": []}
        if sha_of is not None:
            data["sha256"] = hashlib.sha256(sha_of).hexdigest()
        return {"data": data}
    return setup


def local_corpus(content: bytes, sha_of: bytes | None = None):
    def setup(project, server):
        path = project.parent / "small-corpus.txt"
        path.write_bytes(content)
        return {"data": {"url": str(path), "sha256": hashlib.sha256(sha_of or content).hexdigest(), "mirrors": []}}
    return setup


def closed_port(project, server):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {"data": {"url": f"http://127.0.0.1:{port}/input.txt", "mirrors": []}}


def corpus_files(files: dict[str, bytes]):
    """setup: files under data/corpus/case/ read as the corpus (data.source: files)."""
    def setup(project, server):
        folder = project / "data" / "corpus" / "case"
        folder.mkdir(parents=True)
        for name, content in files.items():
            (folder / name).write_bytes(content)
        return {"data": {"source": "files", "files": "data/corpus/case"}}
    return setup


def hf_dataset_with_column(column: str):
    def setup(project, server):
        from datasets import Dataset

        Dataset.from_dict({column: ["Some text.\n", "More text.\n"]}).save_to_disk(str(project / "data/corpus/ds"))
        return {"data": {"source": "hf", "hf_path": "data/corpus/ds", "text_column": "text"}}
    return setup


def truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


def model_copy(project: Path, source: str = "models/pretrain") -> Path:
    target = project / CASE_DIR / "model"
    shutil.copytree(project / source, target)
    return target


def broken_model(change: Callable[[Path], None]):
    def setup(project, server):
        change(model_copy(project))
    return setup


def pipeline_file(change: Callable[[Path], None]):
    """setup: damage a pipeline output in place (a later stage reads it)."""
    def setup(project, server):
        change(project)
    return setup


class Bomb:
    """Unpickling this creates a file: the proof that a loader ran pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def pickle_as(name: str, source: str = "models/pretrain"):
    def setup(project, server):
        target = model_copy(project, source)
        for old in target.glob("*.safetensors"):
            old.unlink()
        (target / name).write_bytes(pickle.dumps({"weights": Bomb(project / CASE_DIR / "UNPICKLED")}))
    return setup


def hf_pickle_only(project, server):
    """A Hugging Face GPT-2 directory whose weights are only a pickle (pytorch_model.bin)."""
    pickle_as("pytorch_model.bin", source="models/hf")(project, server)


def mismatched_config(model_dir: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    config["n_embd"] = 64
    (model_dir / "config.json").write_text(json.dumps(config))


def another_models_vocabulary(model_dir: Path) -> None:
    """A valid map of shared embedding rows that is not this model's: a seen id trades rows with an unseen one."""
    from safetensors.torch import load_file, save_file

    path = model_dir / "vocabulary.safetensors"
    row_of_id = load_file(str(path))["row_of_id"]
    seen, unseen = int(row_of_id.argmin()), int(row_of_id.argmax())
    row_of_id[[seen, unseen]] = row_of_id[[unseen, seen]]
    save_file({"row_of_id": row_of_id}, str(path))


def pairs_without(column: str):
    def change(project):
        from datasets import load_from_disk

        folder = project / "data/preferences/pairs"
        load_from_disk(str(folder)).remove_columns(column).save_to_disk(str(project / CASE_DIR / "pairs"))
        shutil.rmtree(folder)
        shutil.move(project / CASE_DIR / "pairs", folder)
    return change


def header_length_huge(model_dir: Path) -> None:
    data = bytearray((model_dir / "model.safetensors").read_bytes())
    data[:8] = (2**40).to_bytes(8, "little")  # a header "longer" than the file
    (model_dir / "model.safetensors").write_bytes(bytes(data))


def section_replaced(section: str, value):
    def edit(values):
        values[section] = value
    return edit


def generate(model: str, *options: str) -> tuple[str, ...]:
    return (TINYGPT, "generate", model, "ROMEO:", "--max-tokens", "2", *options)


CORPUS = lambda project: corpus_bytes(project)  # noqa: E731 (a name for the table)

CASES = [
    # ---- params.yaml: every class of type and range error, caught by check_params before any other stage
    Case("unknown section", ("'trian'", "known sections"), edit=section_replaced("trian", {"max_steps": 5})),
    Case("unknown key", ("train.learning_rat", "keys of 'train'"), params={"train": {"learning_rat": 0.1}}),
    Case("text for an integer", ("train.max_steps", "must be an integer"), params={"train": {"max_steps": "many"}}),
    Case("true for a number", ("train.learning_rate", "must be a number"), params={"train": {"learning_rate": True}}),
    Case("infinite number", ("train.learning_rate", "finite"), params={"train": {"learning_rate": float("inf")}}),
    Case("negative learning rate", ("train.learning_rate", "allowed"), params={"train": {"learning_rate": -1e-3}}),
    Case("fraction above one", ("split.val_fraction", "allowed"), params={"split": {"val_fraction": 1.5}}),
    Case("text for a list", ("eval.prompts", "must be a list"), params={"eval": {"prompts": "ROMEO:"}}),
    Case("choice not offered", ("train.optimizer", "muon"), params={"train": {"optimizer": "sgd"}}),
    Case("unknown device", ("compute.device", "cpu"), params={"compute": {"device": "tpu"}}),
    Case("keys that disagree", ("model.n_embd", "n_head"), params={"model": {"n_head": 3}}),
    Case("min_lr above the learning rate", ("train.min_lr",), params={"train": {"min_lr": 0.5}}),
    Case("not YAML", ("params.yaml", "line 1"), raw_params="train: [unclosed\n", by_dvc=True),
    Case("section not a mapping", ("'train'", "mapping"), edit=section_replaced("train", 5)),
    Case("unknown oracle", ("preferences.oracle", "sentiment"), params={"preferences": {"oracle": "gpt4"}}),
    Case("best-of-n deep curve past the report set", ("best_of_n.deep_prompts", "at most"),
         params={"best_of_n": {"deep_prompts": 100}}),
    Case("unknown corpus source", ("data.source", "url"), params={"data": {"source": "ftp"}}),
    Case("corpus files outside data/corpus", ("data.files", "data/corpus"),
         params={"data": {"source": "files", "files": "/etc"}}),
    Case("malformed checksum", ("data.sha256", "64 hexadecimal"), params={"data": {"sha256": "abc"}}),
    # ---- the download stage: network and file failures
    Case("HTTP 404", ("HTTP 404", "data.url"), setup=served("/gone.txt", b"not here", status=404)),
    Case("HTTP 500", ("HTTP 500", "data.url"), setup=served("/boom.txt", b"oops", status=500)),
    Case("server stalls past data.timeout_s", ("timed out", "data.timeout_s"),
         setup=served("/slow.txt", CORPUS, delay_s=4.0), params={"data": {"timeout_s": 1.0}}),
    Case("truncated body", ("truncated", "data.url"),
         setup=served("/short.txt", b"First Citizen:\n", declared_length=1000)),
    Case("checksum mismatch", ("sha256", "data.sha256"), setup=served("/other.txt", b"Other text.\n")),
    Case("non-UTF-8 corpus", ("not UTF-8", "data.url"),
         setup=served("/latin1.txt", "Romeo und Julia: Grüße\n".encode("latin-1"),
                      sha_of="Romeo und Julia: Grüße\n".encode("latin-1"))),
    Case("connection refused", ("refused", "data.url"), setup=closed_port),
    Case("missing local corpus", ("/no/such/corpus.txt", "data.url"),
         params={"data": {"url": "/no/such/corpus.txt", "mirrors": []}}),
    Case("no corpus files", ("data.files", "put .txt files"), setup=corpus_files({"notes.md": b"# not text\n"})),
    Case("non-UTF-8 corpus file", ("play.txt", "UTF-8"), setup=corpus_files({"play.txt": b"caf\xe9\n"})),
    Case("dataset without the text column", ("data.text_column", "content"), setup=hf_dataset_with_column("content")),
    # ---- data too small for the model
    Case("val split shorter than the context", ("split.val_fraction", "model.block_size"),
         params={"split": {"val_fraction": 0.0005}}),
    Case("corpus smaller than one training window", ("model.block_size",),
         setup=local_corpus(b"ROMEO: hi.\n")),
    # ---- damaged files a later stage reads
    Case("truncated weights read by the reward stage", ("models/pretrain/model.safetensors", "dvc repro pretrain"),
         run=("dvc", "repro", "--single-item", "reward"),
         setup=pipeline_file(lambda p: truncate(p / "models/pretrain/model.safetensors"))),
    Case("preference pairs without a column", ("chosen_ids", "dvc repro preferences"),
         run=("dvc", "repro", "--single-item", "reward"), setup=pipeline_file(pairs_without("chosen_ids"))),
    # ---- the tinygpt command
    Case("truncated model.safetensors", (f"{CASE_DIR}/model/model.safetensors", "truncated"),
         run=generate(f"{CASE_DIR}/model"), setup=broken_model(lambda m: truncate(m / "model.safetensors"))),
    Case("corrupt safetensors header", (f"{CASE_DIR}/model/model.safetensors", "corrupt"),
         run=generate(f"{CASE_DIR}/model"), setup=broken_model(header_length_huge)),
    Case("config.json that does not match the weights", ("config.json", "do not match"),
         run=generate(f"{CASE_DIR}/model"), setup=broken_model(mismatched_config)),
    Case("vocabulary map of another model", ("vocabulary.safetensors", "different embeddings"),
         run=generate(f"{CASE_DIR}/model"), setup=broken_model(another_models_vocabulary)),
    Case("config.json that is not JSON", ("config.json", "not valid JSON"),
         run=generate(f"{CASE_DIR}/model"),
         setup=broken_model(lambda m: (m / "config.json").write_text("{'n_layer': 1"))),
    Case("a pickle where safetensors is expected", (f"{CASE_DIR}/model/model.safetensors",),
         run=generate(f"{CASE_DIR}/model"), setup=pickle_as("model.safetensors")),
    Case("a Hugging Face directory with only a pickle", (f"{CASE_DIR}/model", "safetensors"),
         run=generate(f"{CASE_DIR}/model"), setup=hf_pickle_only),
    Case("model directory that does not exist", (f"{CASE_DIR}/nope", "does not exist"),
         run=generate(f"{CASE_DIR}/nope")),
    Case("prompt longer than the model's context", ("prompt", "block_size"),
         run=(TINYGPT, "generate", "models/pretrain", LONG_PROMPT, "--max-tokens", "2")),
    Case("top-p outside (0, 1]", ("--top-p",), run=generate("models/pretrain", "--top-p", "1.5")),
    Case("unknown MLflow model", ("models:/tinygpt-nope@current",), run=generate("models:/tinygpt-nope@current")),
    Case("params file that does not exist", ("elsewhere.yaml", "not found"),
         run=(TINYGPT, "params", "--file", "elsewhere.yaml")),
]


# ---------------------------------------------------------------- the checks


def stage_outputs(project: Path) -> dict[str, list[str]]:
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    return {name: [p for kind in ("outs", "metrics", "plots") for p in declared_paths(stage.get(kind, []))]
            for name, stage in stages.items()}


def digest(path: Path) -> dict[str, str] | None:
    """md5 of a file, or of each file in a folder by relative name; None when absent."""
    if path.is_file():
        return {"": hashlib.md5(path.read_bytes()).hexdigest()}
    if path.is_dir():
        return {f.relative_to(path).as_posix(): hashlib.md5(f.read_bytes()).hexdigest()
                for f in sorted(path.rglob("*")) if f.is_file()}
    return None


def snapshot(project: Path) -> dict[str, dict[str, dict | None]]:
    return {stage: {out: digest(project / out) for out in outs} for stage, outs in stage_outputs(project).items()}


def leftovers(project: Path) -> list[str]:
    """Temp files and set-aside folders of an atomic write that did not finish."""
    found = []
    for root, dirs, files in os.walk(project):
        dirs[:] = [d for d in dirs if d not in (".git", ".dvc")]
        found += [os.path.join(root, n) for n in dirs + files if re.match(r"\..*\.(tmp|old)$", n)]
    return found


def run_entry_point(project: Path, argv: tuple[str, ...]) -> subprocess.CompletedProcess:
    if argv[0] == "dvc":
        return dvc(project, *argv[1:], check=False)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the copy's own store
    return subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=300)


def apply(case: Case, project: Path, server) -> None:
    overrides = (case.setup(project, server) if case.setup else None) or {}
    for source in (case.params or {}, overrides):
        if source:
            set_params(project, **source)
    if case.edit:
        values = yaml.safe_load((project / "params.yaml").read_text())
        case.edit(values)
        (project / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    if case.raw_params is not None:
        (project / "params.yaml").write_text(case.raw_params)


def put_back(project: Path) -> None:
    """Undo the case: the committed files, no case files, and the outputs DVC's cache holds."""
    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=project, check=True)
    shutil.rmtree(project / CASE_DIR, ignore_errors=True)
    for extra in ("data/corpus/case", "data/corpus/ds"):
        shutil.rmtree(project / extra, ignore_errors=True)
    dvc(project, "checkout", "--force")


@pytest.fixture(scope="module")
def finished(finished_project):
    return finished_project


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input(case: Case, finished, tmp_path, http_server):
    project = copy_finished(finished, tmp_path / "project")
    finished_state = snapshot(project)
    apply(case, project, http_server)
    given = snapshot(project)  # what the entry point is handed (a case may damage an output on purpose)

    result = run_entry_point(project, case.run)
    output = result.stdout + result.stderr

    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    prefix = "ERROR: " if case.by_dvc else "error: "
    errors = [line for line in result.stderr.splitlines() if line.startswith(prefix)]
    assert len(errors) == 1 and ("error: " not in result.stderr or not case.by_dvc), \
        f"expected one {prefix!r} message:\n{result.stderr}"
    message = result.stderr[result.stderr.index(prefix):]
    message = message if case.by_dvc else message.split("\nERROR: ")[0]  # ours, without DVC's frame
    for expected in case.says:
        assert expected in message, f"{expected!r} is not in the message:\n{message}"
    assert not (project / CASE_DIR / "UNPICKLED").exists(), "a loader unpickled the file"
    assert leftovers(project) == []

    # Stages that ran before the failure wrote new, complete outputs for the new input (and DVC recorded
    # them); the failed stage's were cleared by DVC before it ran and are never half-written; the rest
    # are as they were.
    ran = set(re.findall(r"Running stage '(\w+)'", output))
    failed = re.findall(r"failed to reproduce '(\w+)'", output)
    after = snapshot(project)
    for stage, outputs in given.items():
        for out, old in outputs.items():
            if stage in failed:
                assert after[stage][out] in (None, old), f"{out} was left changed by the failed stage"
            elif stage not in ran:
                assert after[stage][out] == old, f"{out} ({stage}) changed though {failed or 'no stage'} failed"
    if failed or ran:
        put_back(project)  # nothing is lost: the input put back, DVC restores every earlier output
        assert snapshot(project) == finished_state
    record(case, message)


def record(case: Case, message: str) -> None:
    """With TINYGPT_CASE_LOG set, append what the user saw (docs/reliability.md's table is made from it)."""
    if os.environ.get("TINYGPT_CASE_LOG"):
        entry = {"case": case.name, "run": " ".join(Path(a).name if a == TINYGPT else a for a in case.run[:3]),
                 "message": message.strip()}
        with open(os.environ["TINYGPT_CASE_LOG"], "a") as log:
            log.write(json.dumps(entry) + "\n")


def test_the_table_is_long_enough():
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)
