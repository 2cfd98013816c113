"""The Hugging Face cache check: blobs named by sha256 or git sha1 are re-hashed, a changed byte is named
with the fix, copies without a blob name are reported as unverifiable rather than passed as checked."""
import pytest

from support import fake_hub_repo
from tinygpt.core.hub_integrity import HubCacheCorrupt, verify_cached_repo

FILES = {"config.json": b'{"n_layer": 1}\n', "model.safetensors": b"\x08\x00weights" * 1000,
         "data/train-00000.parquet": b"PAR1 rows"}


def test_intact_blobs_pass_with_both_kinds_of_name(tmp_path):
    fake_hub_repo(tmp_path, "org/tiny", FILES)
    check = verify_cached_repo("org/tiny", root=tmp_path)
    blobs = sorted(p.name for p in (tmp_path / "models--org--tiny" / "blobs").iterdir())
    assert sorted(len(name) for name in blobs) == [40, 64, 64]  # git sha1 for config.json, sha256 for LFS
    assert sorted(f.split("/", 1)[1] for f in check.verified) == sorted(FILES)
    assert check.unverifiable == []


@pytest.mark.parametrize("file", sorted(FILES))
def test_a_changed_byte_is_refused_naming_the_file_and_the_fix(tmp_path, file):
    snapshot = fake_hub_repo(tmp_path, "org/tiny", FILES)
    blob = (snapshot / file).resolve()
    content = bytearray(blob.read_bytes())
    content[len(content) // 2] ^= 1
    blob.write_bytes(bytes(content))
    with pytest.raises(HubCacheCorrupt) as err:
        verify_cached_repo("org/tiny", root=tmp_path)
    assert file in str(err.value) and err.value.blob == blob.name
    assert f"delete {tmp_path / 'models--org--tiny'} and download again" in str(err.value)


def test_a_truncated_blob_is_refused(tmp_path):
    snapshot = fake_hub_repo(tmp_path, "org/tiny", FILES)
    blob = (snapshot / "model.safetensors").resolve()
    blob.write_bytes(blob.read_bytes()[:-1])
    with pytest.raises(HubCacheCorrupt, match="model.safetensors"):
        verify_cached_repo("org/tiny", root=tmp_path)


def test_copies_are_unverifiable_and_datasets_have_their_own_folder(tmp_path):
    snapshot = fake_hub_repo(tmp_path, "org/rows", FILES, repo_type="dataset")
    link = snapshot / "config.json"
    link.unlink()
    link.write_bytes(FILES["config.json"])  # a copy, as on a filesystem without symlinks
    check = verify_cached_repo("org/rows", "dataset", root=tmp_path)
    assert [f.split("/", 1)[1] for f in check.unverifiable] == ["config.json"] and len(check.verified) == 2
    assert verify_cached_repo("org/rows", "model", root=tmp_path).verified == []  # models--org--rows: absent


def test_a_repo_not_in_the_cache_checks_nothing(tmp_path):
    check = verify_cached_repo("org/absent", root=tmp_path)
    assert check.verified == [] and check.unverifiable == []
