"""Files in the Hugging Face Hub cache, re-hashed against the names the Hub gave them.

huggingface_hub keeps each downloaded file once, as `blobs/<etag>`, and links it from
`snapshots/<commit>/<path>`. A file kept in Git LFS (weights, parquet shards) has its sha256 as etag; a
small file kept in plain git has its git blob id, the sha1 of b"blob <size>\\0" + content. After a
download huggingface_hub checks only the size, so a blob that was corrupted or swapped on disk would load
silently. `verify_cached_repo` re-hashes every blob that a repo's snapshots point at.
"""

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub.file_download import repo_folder_name

from tinygpt.core.errors import TinyGptError

SHA256_NAME = re.compile(r"[0-9a-f]{64}")
GIT_SHA1_NAME = re.compile(r"[0-9a-f]{40}")
CHUNK_BYTES = 1 << 22


class HubCacheCorrupt(TinyGptError):
    """A cached file whose content does not hash to its blob name: an error, never a reason to go on
    without the model or dataset, since a fresh download fixes it."""

    def __init__(self, repo_dir: Path, file: str, blob: str, actual: str):
        self.repo_dir, self.file, self.blob, self.actual = repo_dir, file, blob, actual
        super().__init__(f"the Hugging Face cache's copy of {file} does not match the hash the Hub named it by "
                         f"(blob {blob[:12]}…, content hashes to {actual[:12]}…); delete {repo_dir} and download again")


@dataclass
class CacheCheck:
    """What `verify_cached_repo` looked at: files it re-hashed, and files it could not (copies, not links,
    as huggingface_hub makes where symlinks are unavailable, so there is no blob name to check against)."""
    repo_dir: Path
    verified: list[str] = field(default_factory=list)
    unverifiable: list[str] = field(default_factory=list)


def cache_dir() -> Path:
    import huggingface_hub.constants  # read at call time: tests and users point HF_HUB_CACHE elsewhere

    return Path(huggingface_hub.constants.HF_HUB_CACHE)


def repo_cache_dir(repo_id: str, repo_type: str = "model", root: Path | None = None) -> Path:
    """Where huggingface_hub caches a repo: <cache>/models--org--name (or datasets--…), named by
    huggingface_hub's own rule so the two cannot drift apart."""
    return (root or cache_dir()) / repo_folder_name(repo_id=repo_id, repo_type=repo_type)


def verify_cached_repo(repo_id: str, repo_type: str = "model", root: Path | None = None) -> CacheCheck:
    """Re-hash every cached file of a repo, or raise HubCacheCorrupt naming the first that fails.
    A repo that is not in the cache (it was loaded from a local folder) gives an empty CacheCheck."""
    repo_dir = repo_cache_dir(repo_id, repo_type, root)
    check = CacheCheck(repo_dir)
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return check
    for link in sorted(p for p in snapshots.rglob("*") if p.is_file()):
        file = str(link.relative_to(snapshots))
        blob = link.resolve()
        if blob.parent != (repo_dir / "blobs").resolve():
            check.unverifiable.append(file)
            continue
        expected = blob.name
        actual = content_hash(blob, expected)
        if actual is None:
            check.unverifiable.append(file)
        elif actual != expected:
            raise HubCacheCorrupt(repo_dir, file, expected, actual)
        else:
            check.verified.append(file)
    return check


def content_hash(blob: Path, name: str) -> str | None:
    """The hash of the kind the blob's name is (sha256 or git blob sha1), or None for a name that is neither."""
    if SHA256_NAME.fullmatch(name):
        digest = hashlib.sha256()
    elif GIT_SHA1_NAME.fullmatch(name):
        digest = hashlib.sha1(f"blob {blob.stat().st_size}\0".encode())
    else:
        return None
    with blob.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
