"""Row-parallel kernels on Python threads instead of Numba's parallel loops.

A kernel compiled with parallel=True (prange) took 5-7 s to compile here, a
quarter of a cold start each, and its first call starts Numba's threading
layer. The row kernels of the upsampling and the synthesis are instead plain
`@njit(nogil=True)` functions over a range of rows, which Python threads run
side by side (the GIL is released inside them). Every row is computed by the
same integer arithmetic whichever thread takes it, so the result does not
depend on the number of threads or on their timing.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba

# Pieces per thread: the rows are handed out in this many pieces per thread, from
# a shared counter, so that a thread the operating system preempts (on a shared
# machine) leaves its remaining pieces to the others. Each piece costs a kernel
# call, about 10 µs.
PIECES_PER_THREAD = 4

# Below this many output values a call runs on the calling thread alone: handing
# pieces to another thread costs tens of µs, more than small levels of the
# upsampling take.
SERIAL_BELOW = 1 << 16

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def thread_count() -> int:
    """The number of threads to use: Numba's (NUMBA_NUM_THREADS, numba.set_num_threads)."""
    return numba.get_num_threads()


def _shared_pool() -> ThreadPoolExecutor:
    """One pool for the process: starting threads for every call would cost about 0.1 ms each."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=max(1, numba.config.NUMBA_NUM_THREADS - 1),
                thread_name_prefix="coolchic-ref",
            )
        return _pool


def parallel_rows(kernel: Callable[..., Any], n_rows: int, row_size: int, *args: Any) -> None:
    """kernel(first, last, *args) over pieces [first, last) covering rows 0..n_rows-1,
    each row exactly once, on up to thread_count() threads (the caller's included);
    row_size: output values per row (one thread below SERIAL_BELOW values in all)."""
    n_threads = min(thread_count(), n_rows) if n_rows * row_size >= SERIAL_BELOW else 1
    if n_threads <= 1:
        if n_rows > 0:
            kernel(0, n_rows, *args)
        return
    n_pieces = min(n_rows, PIECES_PER_THREAD * n_threads)
    bounds = [piece * n_rows // n_pieces for piece in range(n_pieces + 1)]
    counter = itertools.count()  # next() on it is atomic under the GIL

    def work() -> None:
        while (piece := next(counter)) < n_pieces:
            kernel(bounds[piece], bounds[piece + 1], *args)

    run_alongside(work, *[work] * (n_threads - 1))


def run_alongside(own: Callable[[], Any], *others: Callable[[], Any]) -> None:
    """own() on the calling thread while the shared pool runs the `others`; returns when
    all are done, raising the first error. `own` may wait for the others (the v2 grid
    pipeline does); the others must not wait for anything, so that a pool thread never
    blocks on work queued behind it."""
    pool = _shared_pool()
    helpers = [pool.submit(task) for task in others]
    try:
        own()
    finally:
        for helper in helpers:
            helper.result()
