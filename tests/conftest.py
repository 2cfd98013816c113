"""Fixtures shared by the tests: the repository root, the offline corpus, a temp MLflow store, a
loopback HTTP server and a copy of the project with a tiny configuration (`tiny_project`)."""
from __future__ import annotations

import http.server
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
    finished state. Shared by the tests of a session, so they change a copy (`support.copy_finished`)."""
    project = tiny_copy(tmp_path_factory.mktemp("finished"), shakespeare_path)
    dvc(project, "repro")
    commit_all(project, "the tiny pipeline, reproduced")
    return project
