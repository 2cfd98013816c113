import subprocess
import sys

from tinygpt.core import allocator


def test_applies_on_linux_glibc_in_a_fresh_process():
    # mallopt lasts for the life of a process, so this runs in a child, not in the test process.
    code = "from tinygpt.core.allocator import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == ("True" if sys.platform.startswith("linux") else "False")


def test_is_a_no_op_off_linux(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
