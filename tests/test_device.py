"""keep_freed_memory really stops glibc from trimming freed memory (it used to ask for the opposite)."""
from __future__ import annotations

import subprocess
import sys

import pytest

# In a fresh process (the setting is for the life of a process): with mmap off, a 64 MiB block comes
# from the heap; once freed it must stay at the top of the heap (mallinfo2's keepcost), not be trimmed.
PROBE = """
import ctypes
from sweeplab.models.device import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
assert keep_freed_memory()
block = libc.malloc(64 << 20)
libc.free(block)
print(libc.mallinfo2().keepcost)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_memory_is_kept_not_trimmed():
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    if "mallinfo2" in probe.stderr:  # glibc older than 2.33 (or not glibc): nothing to read back
        pytest.skip("no mallinfo2 in this libc")
    assert probe.returncode == 0, probe.stderr
    assert int(probe.stdout) >= 64 << 20  # trimmed, it would be about M_TOP_PAD (128 KiB)
