"""Fetch the raw corpus from a URL, a file:// URL or a local path, verified against a pinned sha256.

Sources are tried in order; the first whose bytes match the checksum wins. Bytes stream to a temp file
beside the output and are renamed into place only after the checksum matches, so a failed or
interrupted download never leaves a partial corpus behind.
"""
from __future__ import annotations

import hashlib
import http.client
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tinygpt.core.errors import TinyGptError
from tinygpt.core.io import atomic_path

CHUNK = 1 << 16


class DownloadError(TinyGptError):
    """No source gave the expected bytes."""


class ChecksumMismatch(DownloadError):
    pass


@dataclass
class DownloadResult:
    path: Path
    source: str
    sha256: str
    n_bytes: int
    attempts: list[str]


def download_corpus(
    sources: list[str], sha256: str, out_path: Path, timeout_s: float
) -> DownloadResult:
    """Try each source in order until one yields bytes with the expected sha256."""
    failures: list[str] = []
    for source in sources:
        try:
            with atomic_path(out_path) as tmp:
                digest, n_bytes = fetch_to(source, tmp, timeout_s)
                if digest != sha256.lower():
                    raise ChecksumMismatch(f"sha256 {digest} != expected {sha256.lower()} ({n_bytes} bytes)")
                check_utf8_text(tmp, source)
            return DownloadResult(out_path, source, digest, n_bytes, failures + [f"{source}: ok"])
        except (DownloadError, OSError, ValueError, http.client.HTTPException) as err:
            failures.append(f"{source}: {failure_reason(err, timeout_s)}")
    raise DownloadError(
        "could not fetch the corpus; tried:\n  - "
        + "\n  - ".join(failures)
        + "\nTo run offline, point data.url at a local copy of the file, e.g.\n"
        "  dvc exp run -S data.url=/path/to/input.txt\n"
        "(or add it to data.mirrors); the checksum data.sha256 must still match."
    )


def fetch_to(source: str, dest: Path, timeout_s: float) -> tuple[str, int]:
    """Stream `source` into `dest`, returning (sha256 hex, byte count)."""
    hasher = hashlib.sha256()
    n_bytes = 0
    with open_source(source, timeout_s) as stream, dest.open("wb") as out:
        announced = getattr(stream, "headers", {}).get("Content-Length")
        while chunk := stream.read(CHUNK):
            hasher.update(chunk)
            out.write(chunk)
            n_bytes += len(chunk)
    # http.client ends a read early, without an error, when the server closes the connection mid-body.
    if announced is not None and announced.isdigit() and n_bytes < int(announced):
        raise DownloadError(f"truncated: {n_bytes} of the {announced} bytes announced arrived before the "
                            "connection closed")
    return hasher.hexdigest(), n_bytes


def open_source(source: str, timeout_s: float):
    """A binary stream for an http(s) URL, a file:// URL or a plain local path."""
    scheme = urllib.parse.urlparse(source).scheme.lower()
    if scheme in ("http", "https"):
        request = urllib.request.Request(source, headers={"User-Agent": "tinygpt-download"})
        return urllib.request.urlopen(request, timeout=timeout_s)
    if scheme == "file":
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(source).path)).open("rb")
    if scheme == "" or len(scheme) == 1:  # a plain path (a one-letter scheme is a Windows drive)
        return Path(source).expanduser().open("rb")
    raise DownloadError(f"unsupported URL scheme '{scheme}' (use https, http, file or a local path)")


def check_utf8_text(path: Path, source: str) -> None:
    data = path.read_bytes()
    if not data:
        raise DownloadError("the file is empty")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DownloadError(f"not UTF-8 text (byte {err.start}: {err.reason})") from err


def failure_reason(err: BaseException, timeout_s: float) -> str:
    """One line a user can act on, for the usual network and file failures."""
    timed_out = f"timed out after {timeout_s:g} s without data (a slow server needs a larger data.timeout_s)"
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        reason = err.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return timed_out
        return f"unreachable ({reason})"
    if isinstance(err, (socket.timeout, TimeoutError)):
        return timed_out
    if isinstance(err, http.client.IncompleteRead):
        return "truncated: the connection closed before the announced Content-Length was sent"
    if isinstance(err, http.client.HTTPException):
        return f"broken HTTP response ({type(err).__name__}: {err})"
    if isinstance(err, FileNotFoundError):
        return f"no such file ({err.filename})"
    return str(err) or type(err).__name__

