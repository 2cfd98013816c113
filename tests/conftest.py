"""Fixtures shared by the tests: the repository root, the offline corpus, a temp MLflow store, a
loopback HTTP server and a copy of the project with a tiny configuration (`tiny_project`)."""
from __future__ import annotations

import http.server
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from support import REPO_ROOT, commit_all, dvc, tiny_copy

SHARED_CORPUS = REPO_ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shakespeare_path() -> Path:
    if not SHARED_CORPUS.exists():
        pytest.skip(f"{SHARED_CORPUS} is absent (CI and this workplace keep the corpus in ../shared)")
    return SHARED_CORPUS


@pytest.fixture
def single_thread():
    """One torch thread for tiny models: on shared cores, OpenMP threads waiting on each other make
    small matmuls many times slower than one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    """A fresh SQLite MLflow store for this test; stages log there instead of the repository's."""
    uri = f"sqlite:///{tmp_path / 'mlflow-test.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes, float, int | None]] = {}

    def do_GET(self):  # noqa: N802 (http.server's naming)
        status, body, delay_s, declared_length = self.routes.get(self.path, (404, b"not found", 0.0, None))
        time.sleep(delay_s)
        self.send_response(status)
        self.send_header("Content-Length", str(declared_length or len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


class LoopbackServer:
    """An HTTP server on 127.0.0.1 whose routes map a path to (status, body)."""

    def __init__(self):
        handler = type("Handler", (_Handler,), {"routes": {}})
        self.routes = handler.routes
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def serve(self, path: str, body: bytes, status: int = 200, delay_s: float = 0.0,
              declared_length: int | None = None) -> str:
        """Answer GET `path`; `delay_s` stalls before the headers, a `declared_length` above len(body)
        announces more bytes than are sent (a truncated transfer)."""
        self.routes[path] = (status, body, delay_s, declared_length)
        return self.url(path)


@pytest.fixture
def http_server():
    server = LoopbackServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def tiny_project(tmp_path, shakespeare_path):
    return tiny_copy(tmp_path, shakespeare_path)


@pytest.fixture(scope="session")
def finished_project(tmp_path_factory, shakespeare_path):
    """The tiny project after one whole `dvc repro`, committed with its dvc.lock: a pipeline in a clean,
    finished state. Shared by the tests of a session, so they change a copy (`support.copy_finished`).
    Under pytest-xdist the workers share one: the first to need it builds it in their common temp folder
    while the others wait on the lock."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / "finished"
    with FileLock(shared / "finished.lock"):
        if not (folder / "done").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed half-way
            folder.mkdir()
            project = tiny_copy(folder, shakespeare_path)
            dvc(project, "repro")
            commit_all(project, "the tiny pipeline, reproduced")
            (folder / "done").touch()
    return folder / "project"


def pytest_configure(config):
    """Under pytest-xdist, each worker (and the stages it starts) gets its share of the cores: OpenMP
    threads of two processes spinning on the same cores slow both many times over."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // workers))


def pytest_collection_modifyitems(items):
    """The tests that do not need the shared finished pipeline run first. pytest-xdist hands each worker a
    contiguous share of this order, so the first worker starts on them while another builds
    `finished_project` (minutes of one core) instead of both waiting on its lock."""
    items.sort(key=lambda item: "finished_project" in getattr(item, "fixturenames", ()))
