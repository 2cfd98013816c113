"""MLflow tracking shared by every stage: where the store is, and one run per stage execution.

The store defaults to a SQLite file at the repository root, addressed by an absolute path, so stages
that `dvc exp run --temp` or `--queue` execute in a temporary copy still log to the main repository.
`MLFLOW_TRACKING_URI` overrides it (e.g. `http://127.0.0.1:5000` for an `mlflow server`). SQLite allows one
writer at a time, so every write retries on "database is locked" instead of failing when queued
experiments run in parallel; the retries a run needed are recorded on it (tag `tinygpt.store_retries`).

A store that cannot be reached stops a stage within seconds, before any work, with the URI in the
message; with `tracking.required: false` it is a warning instead and the stage runs untracked.
"""
from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from tinygpt.core import timing
from tinygpt.core.errors import TinyGptError
from tinygpt.core.io import process_alive
from tinygpt.pipeline import paths
from tinygpt.pipeline.params import TrackingParams

STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
# MLflow 3 classifies an experiment as model training by this tag. (3.17.2's UI still opens in its GenAI mode
# until the user flips its "Model training" switch or the link carries ?workflowType=machine_learning: README.)
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
STEP_FLUSH_EVERY = 200  # buffered step metrics per write; one SQLite transaction per step is slow
REACH_TIMEOUT_S = 5.0  # a tracking server that does not answer its health check within this is down
RETRIES_TAG = "tinygpt.store_retries"
PID_TAG, HOST_TAG = "tinygpt.pid", "tinygpt.host"  # which process writes a run: a dead one's run is KILLED
T = TypeVar("T")
store_retries = 0  # retries on a locked store in this process, recorded on each run it logs


class TrackingUnavailable(TinyGptError):
    """The MLflow store cannot be reached or opened; the message names the URI and the ways out."""


def repo_root(start: Path | None = None) -> Path:
    """The main repository's root, also from inside a DVC experiment's temp copy (.dvc/tmp/exps/...)."""
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return here


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / STORE_FILE}"


def artifact_location() -> str:
    return (repo_root() / ARTIFACTS_DIR).as_uri()


# A dataset row is created by the first run that logs it. Two runs logging the same new dataset at once (two
# queued experiments' rlhf stages, on a fresh store or server) both find it missing and both insert it: the
# store answers the second with this (MLflow's get-or-create is not atomic), and a retry finds the row made.
DATASET_RACE = "unique constraint failed: datasets."


def with_retry(action: Callable[[], T], attempts: int = 30, also: tuple[str, ...] = ()) -> T:
    """Run a store write, retrying with jittered backoff while another process holds the SQLite lock (or
    while an error containing one of `also`, lower case, says another writer got there first)."""
    global store_retries
    for attempt in range(attempts):
        try:
            return action()
        except Exception as err:  # mlflow wraps sqlite's OperationalError in its own exception types
            message = str(err).lower()
            if not any(marker in message for marker in ("locked", *also)) or attempt == attempts - 1:
                raise
            store_retries += 1
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def ways_out(uri: str) -> str:
    start = "start it (`mlflow server --host 127.0.0.1 --port PORT`) or " if uri.startswith("http") else ""
    return (f"{start}point MLFLOW_TRACKING_URI at a store that works (unset, it is {STORE_FILE} at the repository "
            "root), or set tracking.required: false in params.yaml to run without tracking")


def check_server(uri: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """TrackingUnavailable unless the MLflow server at `uri` answers its /health check within `timeout_s`.

    MLflow's own client retries a dead server with backoff for minutes; this check fails in seconds."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as err:
        raise TrackingUnavailable(f"MLFLOW_TRACKING_URI={uri}: answered HTTP {err.code} to /health, so it is not "
                                  f"a working MLflow server; {ways_out(uri)}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingUnavailable(f"MLFLOW_TRACKING_URI={uri}: the tracking server is unreachable ({reason}); "
                                  f"{ways_out(uri)}") from err


def open_client(required: bool = True):
    """The store's client, checked before any work; None (after a warning) when it fails and tracking is
    not required."""
    uri = tracking_uri()
    try:
        if uri.startswith(("http://", "https://")):
            check_server(uri)
        try:
            return client()
        except TinyGptError:
            raise
        except Exception as err:  # a store that will not open: a read-only folder, a corrupt database, ...
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TrackingUnavailable(f"MLFLOW_TRACKING_URI={uri}: the store cannot be opened ({first}); "
                                      f"{ways_out(uri)}") from err
    except TrackingUnavailable as err:
        if required:
            raise
        print(f"warning: {err}. tracking.required is false, so this stage runs without an MLflow run",
              file=sys.stderr)
        return None


def client():
    import logging

    from mlflow.tracking import MlflowClient

    # Creating a new store prints alembic's migration chatter; a stage's output should stay readable.
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    uri = tracking_uri()
    with store_creation_lock(uri):
        mlflow_client = MlflowClient(tracking_uri=uri)
        # The first query creates and migrates a new SQLite store; two processes doing that at once
        # (parallel queued experiments on a fresh repository) would race on the schema.
        with_retry(lambda: mlflow_client.search_experiments(max_results=1))
    return mlflow_client


def store_creation_lock(uri: str):
    """An inter-process lock beside a SQLite store; other backends handle concurrency themselves."""
    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    from filelock import FileLock

    return FileLock(uri[len("sqlite:///") :] + ".lock", timeout=300)


def experiment_id(mlflow_client, name: str) -> str:
    """Get or create the experiment, tagged as model training; two processes creating it at once is fine."""
    existing = with_retry(lambda: mlflow_client.get_experiment_by_name(name))
    if existing is None:
        try:
            return with_retry(lambda: mlflow_client.create_experiment(
                name, artifact_location=artifact_location(), tags=EXPERIMENT_TAGS))
        except Exception:
            existing = with_retry(lambda: mlflow_client.get_experiment_by_name(name))
            if existing is None:
                raise
    for key, value in EXPERIMENT_TAGS.items():  # stores made before the tag existed get it too
        if existing.tags.get(key) != value:
            with_retry(lambda: mlflow_client.set_experiment_tag(existing.experiment_id, key, value))
    return existing.experiment_id


def git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def source_tags(stage: str) -> dict[str, str]:
    """MLflow's own source and user tags, which fill the UI's Source and Created-by columns: the stage's
    script, the commit, branch and remote it came from, and whether the work tree had uncommitted changes."""
    status = git("status", "--porcelain", "--untracked-files=no")
    tags = {
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": f"stages/{stage}.py",
        "mlflow.source.git.commit": git("rev-parse", "HEAD") or "unknown",
        "mlflow.source.git.dirty": "unknown" if status is None else str(bool(status)).lower(),
        "mlflow.user": getpass.getuser(),
    }
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    if branch and branch != "HEAD":  # "HEAD" means a detached checkout: no branch to name
        tags["mlflow.source.git.branch"] = branch
    remote = git("remote", "get-url", "origin")
    if remote:
        tags["mlflow.source.git.repoURL"] = remote
    return tags


def md5_digest(path: Path) -> str:
    """md5 of a file (the hash dvc.lock records for it) or over a directory's files and their names."""
    path = Path(path)
    if path.is_file():
        return hashlib.md5(path.read_bytes()).hexdigest()
    digest = hashlib.md5()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(item.relative_to(path).as_posix().encode())
        digest.update(hashlib.md5(item.read_bytes()).digest())
    return digest.hexdigest()


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested numeric dicts to MLflow's flat 'a.b.c' names; strings, lists and None are skipped."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, prefix=f"{name}."))
        elif isinstance(value, bool):
            flat[name] = float(value)
        elif isinstance(value, (int, float)) and value == value and abs(value) != float("inf"):
            flat[name] = float(value)
    return flat


@dataclass
class StageRun:
    """An open MLflow run for one stage execution."""

    mlflow_client: Any
    run_id: str
    stage: str
    pending: list = field(default_factory=list)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            chunk = items[i : i + 100]
            with_retry(lambda: self.mlflow_client.log_batch(self.run_id, params=chunk))

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for name, value in flatten_metrics(metrics).items():
            self.pending.append(Metric(name, value, now, step or 0))
        if step is None or len(self.pending) >= STEP_FLUSH_EVERY:
            self.flush()

    def log_step(self, step: int, metrics: dict[str, Any]) -> None:
        """Step-indexed metrics (training curves); buffered and written in batches."""
        self.log_metrics(metrics, step=step)

    def flush(self) -> None:
        while self.pending:
            chunk, self.pending = self.pending[:1000], self.pending[1000:]
            with_retry(lambda: self.mlflow_client.log_batch(self.run_id, metrics=chunk))

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        with_retry(lambda: self.mlflow_client.log_batch(self.run_id, tags=items))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.mlflow_client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.exists():
            self.mlflow_client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dataset(self, path: str | Path, context: str) -> None:
        """Record a file or directory this stage read as an MLflow dataset input (the runs table's Dataset
        column), identified by its md5 digest; `context` says what for (training, validation, ...)."""
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.entities import DatasetInput, InputTag

        name = paths.DATASET_NAMES.get(Path(path), Path(path).name)
        with timing.phase("logging"):
            dataset = MetaDataset(LocalArtifactDatasetSource(Path(path).as_posix()), name=name, digest=md5_digest(path))
            entity = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])
            with_retry(lambda: self.mlflow_client.log_inputs(self.run_id, datasets=[entity]), also=(DATASET_RACE,))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.mlflow_client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        self.mlflow_client.log_dict(self.run_id, obj, artifact_file)

    def finish(self, metrics: dict[str, Any], artifacts: list[str | Path] = ()) -> dict[str, Any]:
        """Log the final metrics and artifacts, then the stage's time profile (`time`: start-up and each
        phase, in seconds); return the metrics with the profile and this run's id added."""
        with timing.phase("logging"):
            self.log_metrics(metrics)
            self.flush()
            for artifact in artifacts:
                self.log_artifact(artifact)
        profile = {"time": timing.profile().summary()}
        self.log_metrics(profile)
        return {**metrics, **profile, "mlflow_run_id": self.run_id}


def process_tags() -> dict[str, str]:
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def close_dead_runs(mlflow_client, exp_id: str, stage: str) -> list[str]:
    """Mark KILLED this stage's runs that still say RUNNING though their process on this host is gone
    (killed with -9, or the machine went down), so that the UI does not show them running forever."""
    query = (f"attributes.status = 'RUNNING' and tags.stage = '{stage}' "
             f"and tags.`{HOST_TAG}` = '{socket.gethostname()}'")
    found = with_retry(lambda: mlflow_client.search_runs([exp_id], query, max_results=100))
    dead = [r.info.run_id for r in found if r.data.tags.get(PID_TAG, "").isdigit()
            and not process_alive(int(r.data.tags[PID_TAG]))]
    for run_id in dead:
        with_retry(lambda: mlflow_client.set_terminated(run_id, "KILLED"))
    return dead


class UntrackedRun(StageRun):
    """A stage run that logs nothing: the store was unreachable and `tracking.required` is false."""

    def __init__(self, stage: str):
        super().__init__(None, None, stage)

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, Any]) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_dataset(self, path: str | Path, context: str) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        pass


def open_stage_run(stage: str, settings: TrackingParams, run_name: str | None, tags: dict[str, str] | None,
                   system_metrics: bool) -> StageRun | None:
    """Create the stage's MLflow run and make it the active run (None: untracked)."""
    import mlflow

    mlflow_client = open_client(settings.required)
    if mlflow_client is None:
        return None
    exp_id = experiment_id(mlflow_client, settings.experiment)
    close_dead_runs(mlflow_client, exp_id, stage)
    all_tags = {"stage": stage, "mlflow.runName": run_name or stage, **source_tags(stage), **process_tags(),
                **(tags or {})}
    if os.environ.get("DVC_EXP_NAME"):
        all_tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    mlflow_run = with_retry(
        lambda: mlflow_client.create_run(exp_id, tags=all_tags, run_name=run_name or stage)
    )
    run = StageRun(mlflow_client, mlflow_run.info.run_id, stage)
    mlflow.set_tracking_uri(tracking_uri())
    with_retry(lambda: mlflow.start_run(run_id=run.run_id, log_system_metrics=system_metrics))
    return run


@contextmanager
def stage_run(
    stage: str,
    params: dict[str, Any],
    settings: TrackingParams,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    system_metrics: bool = False,
) -> Iterator[StageRun]:
    """Open one MLflow run in `settings.experiment` for a stage: params, tags (stage, source, user) and its
    status. An unreachable store fails here, before the stage's work (or, with `settings.required` false,
    yields an UntrackedRun).

    The run is also MLflow's active run, so fluent calls (logging a model) land in it; with
    `system_metrics`, MLflow samples CPU and memory use into it every 10 s while the stage runs (the
    interval is MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL)."""
    with timing.phase("logging"):
        run = open_stage_run(stage, settings, run_name, tags, system_metrics)
    if run is None:
        yield UntrackedRun(stage)
        return
    import mlflow

    status = "FAILED"
    try:
        with timing.phase("logging"):
            run.log_params(params)
        yield run
        run.flush()
        status = "FINISHED"
    finally:
        with_retry(lambda: run.set_tags({RETRIES_TAG: store_retries}))
        with_retry(lambda: mlflow.end_run(status))
