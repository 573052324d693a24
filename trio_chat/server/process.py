"""Process-wide settings a long-running server wants: the open-file limit, the cyclic
GC's thresholds, and glibc's mmap threshold. Each says why in its docstring."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import resource
from contextlib import suppress

#: File descriptors kept for everything but client sockets (listeners, logs, stdio).
RESERVED_FDS = 32


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit.

    Each connection is one file descriptor; the usual soft default (1024) would cap
    the server far below ``--max-clients``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and hard != resource.RLIM_INFINITY and soft < hard:
        # On failure keep the soft limit we have; the log says what it allows.
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


#: Allocations between young-generation collections (CPython's default is 700).
GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Make the cyclic GC cheap for a server holding many connections.

    Every connection keeps hundreds of long-lived Trio objects, and every join
    allocates lists as long as the room; with CPython's defaults a 4,000-client join
    storm spent 10 of its 31 s in collections (1,637 young, 149 middle and 13 full
    ones). A 50,000-allocation young generation made it 0.5 s (and the joins 2x
    faster) for a few MB of garbage waiting a little longer; ``gc.freeze`` takes the
    objects alive at startup (modules, classes) out of every later full collection.
    """
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 10)


#: glibc's M_MMAP_THRESHOLD: allocations at least this big get their own mapping.
MMAP_THRESHOLD = 64 * 1024


def tune_malloc() -> None:
    """Keep big short-lived buffers out of glibc's heap.

    A ``welcome`` lists every member: 120 KB of text (and its bytes and frame) per
    join in a room of 10,000, freed at once. glibc raises its mmap threshold after
    such frees and then carves them from the heap between long-lived connection
    objects, which fragments it: RSS per idle connection measured 59 KB after a
    10,000-client join storm, 42 KB with the threshold pinned at 64 KB (what
    ``MALLOC_MMAP_THRESHOLD_=65536`` does). Elsewhere (not glibc) this does nothing.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, MMAP_THRESHOLD)  # -3: M_MMAP_THRESHOLD in <malloc.h>
