"""glibc malloc tunables for CPU runs: the one definition, used by ``scripts/train.py``
(``LRM_MALLOC_TUNING=1``) and by the benchmark harness (``benchmarks/``, ``--malloc``).

XLA on CPU allocates fresh temporaries on every step. With glibc's defaults, blocks above
the mmap threshold go through mmap/munmap each time (page faults and zeroing on every step);
these settings keep them in the heap: a 4 GiB mmap threshold, a 64 GiB trim threshold (the
heap is not handed back between steps), transparent huge pages for the heap, and one arena:
XLA allocates from its worker threads, and a thread's own arena grows in heaps of at most
64 MiB, so a larger block fell back to mmap on every step whatever the threshold (measured:
BigBird fwd+bwd in one process grew x4.4 from 8K to 16K, x2.0 with one arena). glibc reads
``GLIBC_TUNABLES`` only when a process starts, so they go into the environment of a new one.
"""

from __future__ import annotations

TUNED_MALLOC = (
  "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=4294967296"
  ":glibc.malloc.trim_threshold=68719476736:glibc.malloc.arena_max=1"
)
