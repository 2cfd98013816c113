"""Keep freed memory in the process instead of handing it back to the OS after every step (glibc only).

A training step of a GPT-2-vocabulary model allocates a few hundred MB of logits and their gradient and
frees them again. glibc serves blocks that large with mmap and unmaps them on free, so the next step maps
fresh pages and takes a page fault on every 4 KiB it touches: on a 2-core CPU that kernel time was a third
of the step (`benchmarks/cpu_allocator.py` measures ~1.4x more tokens/s with this on). Turning mmap off and
never trimming the heap makes the freed blocks reusable; the resident size stays at the peak, which the
process reaches anyway.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameter numbers from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER = 2**31 - 1  # the largest int mallopt takes: "never trim"


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve every block from the heap and never return it; True when applied.
    A no-op elsewhere (macOS, Windows, musl), where it returns False."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER))
