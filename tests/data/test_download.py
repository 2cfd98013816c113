import hashlib
import socket

import pytest

from tinygpt.data.download import DownloadError, download_corpus

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n".encode()
SHA = hashlib.sha256(TEXT).hexdigest()


def leftovers(directory):
    """Anything in the output directory besides the finished file (temp files, partial writes)."""
    return sorted(p.name for p in directory.iterdir() if p.name != "input.txt")


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/input.txt"  # nothing listens there any more


def test_http_success(http_server, tmp_path):
    url = http_server.serve("/input.txt", TEXT)
    out = tmp_path / "raw" / "input.txt"
    result = download_corpus([url], SHA, out, timeout_s=5)
    assert out.read_bytes() == TEXT
    assert (result.source, result.n_bytes, result.sha256) == (url, len(TEXT), SHA)
    assert leftovers(out.parent) == []


def test_http_404_lists_the_source_and_offline_hint(http_server, tmp_path):
    url = http_server.url("/missing.txt")
    out = tmp_path / "input.txt"
    with pytest.raises(DownloadError) as err:
        download_corpus([url], SHA, out, timeout_s=5)
    message = str(err.value)
    assert f"{url}: HTTP 404" in message
    assert "dvc exp run -S data.url=" in message
    assert not out.exists() and leftovers(tmp_path) == []


def test_wrong_checksum_leaves_nothing(http_server, tmp_path):
    url = http_server.serve("/input.txt", TEXT + b"tampered")
    out = tmp_path / "input.txt"
    with pytest.raises(DownloadError, match="sha256 .* != expected"):
        download_corpus([url], SHA, out, timeout_s=5)
    assert not out.exists() and leftovers(tmp_path) == []


def test_unreachable_then_mirror(http_server, tmp_path):
    dead = closed_port_url()
    mirror = http_server.serve("/mirror.txt", TEXT)
    result = download_corpus([dead, mirror], SHA, tmp_path / "input.txt", timeout_s=5)
    assert result.source == mirror
    assert result.attempts[0].startswith(f"{dead}: unreachable")


def test_every_failure_is_listed(http_server, tmp_path):
    bad = http_server.serve("/bad.txt", b"other bytes")
    dead = closed_port_url()
    with pytest.raises(DownloadError) as err:
        download_corpus([bad, dead, str(tmp_path / "nope.txt")], SHA, tmp_path / "input.txt", timeout_s=5)
    message = str(err.value)
    assert f"{bad}: sha256" in message
    assert f"{dead}: unreachable" in message
    assert "nope.txt: no such file" in message


def test_timeout(tmp_path):
    # A server that accepts the connection but never answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/input.txt"
        with pytest.raises(DownloadError, match="timed out"):
            download_corpus([url], SHA, tmp_path / "input.txt", timeout_s=0.5)
    assert leftovers(tmp_path) == []


def test_local_path_and_file_url(tmp_path):
    source = tmp_path / "copy.txt"
    source.write_bytes(TEXT)
    out = tmp_path / "out" / "input.txt"
    assert download_corpus([str(source)], SHA, out, timeout_s=5).source == str(source)
    out.unlink()
    assert download_corpus([source.as_uri()], SHA, out, timeout_s=5).n_bytes == len(TEXT)
    assert out.read_bytes() == TEXT


def test_empty_and_non_utf8_are_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(DownloadError, match="empty"):
        download_corpus([str(empty)], hashlib.sha256(b"").hexdigest(), tmp_path / "o" / "input.txt", timeout_s=5)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café".encode("latin-1"))
    with pytest.raises(DownloadError, match="not UTF-8"):
        download_corpus([str(latin1)], hashlib.sha256(latin1.read_bytes()).hexdigest(), tmp_path / "o" / "input.txt",
                        timeout_s=5)
    assert not (tmp_path / "o" / "input.txt").exists()


def test_unsupported_scheme(tmp_path):
    with pytest.raises(DownloadError, match="unsupported URL scheme 'ftp'"):
        download_corpus(["ftp://example.org/input.txt"], SHA, tmp_path / "input.txt", timeout_s=5)


def test_the_real_corpus_checksum(shakespeare_path, tmp_path):
    from tinygpt.data.config import DataParams

    result = download_corpus([str(shakespeare_path)], DataParams().sha256, tmp_path / "input.txt", timeout_s=5)
    assert result.n_bytes == 1_115_394
