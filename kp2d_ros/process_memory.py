"""Keeping the node's memory steady: glibc allocator settings and returning freed memory.

Measured (docs/memory.md): most of the node's memory beyond the model is freed heap that glibc
keeps. Every thread that allocates (the executor, the worker, ONNX Runtime's and PyTorch's
pools) gets its own malloc arena, and after a large frame the dynamic mmap threshold rises, so
later large buffers come from those arenas and stay there when freed. The node therefore

* caps the number of arenas (``M_ARENA_MAX``) and fixes the mmap threshold (``M_MMAP_THRESHOLD``:
  a frame-sized buffer is always its own mapping and goes back to the system when freed),
* trims the heaps (``malloc_trim``) every diagnostics period (a few ms).

Elsewhere than Linux/glibc these are no-ops. The figures are process-wide, so this module is
used by the node's entry point only, never by the library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from pathlib import Path

LOG = logging.getLogger(__name__)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
ARENAS = 2
MMAP_THRESHOLD = 1 << 20  # 1 MiB: any image-sized buffer is mmapped
TRIM_THRESHOLD = 8 << 20  # keep up to 8 MiB of free heap top before giving it back
_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library('c')
        try:
            _LIBC = ctypes.CDLL(name) if name else False
        except OSError:
            _LIBC = False
        if _LIBC and not hasattr(_LIBC, 'malloc_trim'):
            _LIBC = False  # not glibc
    return _LIBC


def configure_allocator() -> bool:
    """Set the arena cap and the fixed thresholds; True when applied (glibc)."""
    libc = _libc()
    if not libc:
        return False
    ok = all(
        libc.mallopt(option, value) == 1
        for option, value in (
            (M_ARENA_MAX, ARENAS),
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        )
    )
    if not ok:
        LOG.warning('glibc refused an allocator setting; memory may grow after large frames')
    return ok


def trim() -> None:
    """Give freed heap memory back to the system (glibc ``malloc_trim``)."""
    libc = _libc()
    if libc:
        libc.malloc_trim(0)


def rss_mib(pid: str | int = 'self') -> float:
    """Resident memory (MiB) of a process, from /proc (NaN where unavailable)."""
    return _status_mib(pid, 'VmRSS:')


def peak_rss_mib(pid: str | int = 'self') -> float:
    """Peak resident memory (MiB) of a process since it started its program (NaN where
    unavailable). Not ``getrusage``'s ``ru_maxrss``: Linux carries that across ``exec``, so a
    process started by a large one would report its parent's size."""
    return _status_mib(pid, 'VmHWM:')


def _status_mib(pid: str | int, key: str) -> float:
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float('nan')


def rss_breakdown(pid: str | int = 'self') -> dict[str, float]:
    """Resident memory (MiB) by kind of mapping: heap and anonymous memory (allocator arenas,
    mmapped buffers, thread stacks), shared libraries (torch, onnxruntime, OpenCV, ...) and
    other files, from /proc/<pid>/smaps."""
    totals = {'heap_and_anonymous': 0.0, 'libraries': 0.0, 'other_files': 0.0}
    kind = 'heap_and_anonymous'
    try:
        lines = Path(f'/proc/{pid}/smaps').read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        fields = line.split()
        if fields and '-' in fields[0] and len(fields) >= 5:  # a mapping's header line
            path = fields[5] if len(fields) > 5 else ''
            if not path or path.startswith('['):
                kind = 'heap_and_anonymous'
            elif '.so' in path:
                kind = 'libraries'
            else:
                kind = 'other_files'
        elif fields and fields[0] == 'Rss:':
            totals[kind] += int(fields[1]) / 1024.0
    return totals
