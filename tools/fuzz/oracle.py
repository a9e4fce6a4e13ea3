"""The oracle: decode one input under the bounds of spec 9.3 and judge the outcome."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import resource
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tools.fuzz.bounds import FIXED_MEMORY, STREAM_COPIES, TIME_FIXED, memory_bound, time_bound
from tools.fuzz.slot import SharedSlot
from tools.fuzz.spec_rules import SUBSTREAM_MESSAGES, spec_verdict

_NUMBER = re.compile(r"-?\d+")


def outcome_key(kind: str, detail: str) -> str:
    """Outcome class: numbers replaced by N, so messages differing only in values merge."""
    return f"{kind}:{_NUMBER.sub('N', detail)}" if detail else kind


@dataclass
class Result:
    """The oracle's verdict on one input."""

    key: str  # outcome class: "ok", "reject:<message>", "skip:..." or "finding:..."
    finding: str | None = None  # kind of problem, None when the outcome is allowed
    detail: str = ""
    seconds: float = 0.0
    raw_sha256: str | None = None  # of the canonical raw samples, when decoded


def single_malloc_arena() -> None:
    """Stop glibc from creating malloc arenas (mallopt M_ARENA_MAX = 1), if it is glibc.

    RLIMIT_AS counts address space, and glibc reserves 64 MiB of it (128 MiB while
    it aligns the mapping) for each new per-thread arena, touching only what it
    hands out: reserved, not allocated, so outside the bound of spec 9.3. Measured:
    the first 2-thread decodes of the seeds grow the address space by 146 MiB
    without this, 18 MiB with it (two 8 MiB thread stacks). Threads then share the
    arenas that already exist; what the decoder allocates is unchanged. The CLI
    check, on a process with the default allocator, measures resident memory,
    where untouched reservations do not show.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(-8, 1)  # M_ARENA_MAX (malloc.h)


class Oracle:
    """Decodes inputs and judges each outcome against spec section 9."""

    def __init__(
        self,
        *,
        jit: bool = True,
        max_pixels: int = 1 << 20,
        limit_memory: bool = True,
        check_decision: bool = True,
        slot: SharedSlot | None = None,
        hang_seconds: float = 10.0,
    ) -> None:
        from coolchic_ref import StreamError, decode
        from coolchic_ref.syntax import parse_header

        self.decode = decode
        self.parse_header = parse_header
        self.StreamError = StreamError
        self.jit = jit
        self.max_pixels = max_pixels
        self.limit_memory = limit_memory and sys.platform.startswith("linux")
        self.slot = slot
        self.check_decision = check_decision
        self.hang_seconds = hang_seconds
        self.count = 0
        self._statm = os.open("/proc/self/statm", os.O_RDONLY) if self.limit_memory else None
        self._page = os.sysconf("SC_PAGE_SIZE") if self.limit_memory else 0
        self._warm = False
        if self.limit_memory:
            single_malloc_arena()

    def warm_up(self, streams: list[bytes]) -> None:
        """Import and compile (or load) the kernels by decoding `streams`, without limits.

        The memory limit applies only after this: loading Numba and LLVM maps
        hundreds of MiB that no input is responsible for.
        """
        for data in streams[:50]:
            with contextlib.suppress(self.StreamError):
                self.decode(data)
        self._warm = True

    def _virtual_size(self) -> int:
        return int(os.pread(self._statm, 128, 0).split()[0]) * self._page

    @contextlib.contextmanager
    def _memory_limit(self, limit: int) -> Iterator[None]:
        if not self.limit_memory or not self._warm:
            yield
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (self._virtual_size() + limit, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

    def bounds(self, data: bytes) -> tuple[object | None, float, int]:
        """(header or None, time bound, memory bound) of an input."""
        try:
            header = self.parse_header(data)
        except self.StreamError:
            return None, TIME_FIXED[self.jit], FIXED_MEMORY + STREAM_COPIES * len(data)
        except Exception:  # reported by run()
            return None, TIME_FIXED[self.jit], FIXED_MEMORY + STREAM_COPIES * len(data)
        return header, time_bound(header, self.jit), memory_bound(header, len(data))

    def run(self, data: bytes) -> Result:
        """Decode `data` and judge the outcome."""
        header, t_bound, m_bound = self.bounds(data)
        if header is not None and header.width * header.height > self.max_pixels:
            return Result("skip:large-picture")
        self.count += 1
        if self.slot is not None:
            # The supervisor kills the worker at 3x the bound (plus hang_seconds): a hang.
            self.slot.begin(self.count, data, 3 * t_bound + self.hang_seconds)
        start = time.perf_counter()
        image = error = None
        try:
            with self._memory_limit(m_bound):
                if SELFTEST and self.count == 50:
                    _selftest_failure()
                image = self.decode(data)
        except self.StreamError as e:
            error = e
        except MemoryError as e:
            return self._finish(
                Result(outcome_key("finding:memory", type(e).__name__), "memory", _trace()), start
            )
        except BaseException as e:  # noqa: BLE001 - every other exception is a finding
            if isinstance(e, KeyboardInterrupt):
                raise
            kind = "memory" if "MemoryError" in repr(e) else "exception"
            key = outcome_key(f"finding:{kind}", type(e).__name__)
            return self._finish(Result(key, kind, _trace()), start)
        result = self._judge(header, image, error)
        self._finish(result, start)
        if result.finding is None and self.check_decision:
            result = self._check_decision(data, result, error)
        if result.finding is None and result.seconds > t_bound:
            result = Result(
                outcome_key("finding:slow", ""),
                "slow",
                f"{result.seconds:.3f} s > bound {t_bound:.3f} s ({result.key})",
                result.seconds,
            )
        return result

    def _check_decision(self, data: bytes, result: Result, error) -> Result:
        """Compare the decoder's decision with `spec_verdict` (rules 1-6 and 7a)."""
        verdict = spec_verdict(data)
        if result.key == "ok":
            if verdict is not None:
                return Result("finding:accepted-invalid", "accepted-invalid", f"rule {verdict}")
            return result
        substream_rule = any(m in result.detail for m in SUBSTREAM_MESSAGES)
        if verdict is None and not substream_rule:
            return Result(
                outcome_key("finding:rejected-valid", result.detail),
                "rejected-valid",
                f"decoder: {result.detail}; spec rules 1-6 and 7a hold",
            )
        if verdict is not None and verdict[0] < 7 and substream_rule:
            return Result(
                outcome_key("finding:wrong-rule", result.detail),
                "wrong-rule",
                f"decoder: {result.detail}; but rule {verdict} comes first",
            )
        return result

    def _finish(self, result: Result, start: float) -> Result:
        result.seconds = time.perf_counter() - start
        if self.slot is not None:
            self.slot.end(self.count)
        return result

    def _judge(self, header, image, error) -> Result:
        if error is not None:
            message = error.args[0] if error.args else ""
            if (
                not isinstance(message, str)
                or not message
                or "\n" in message
                or "\r" in message
                or len(message) > 300
            ):
                return Result("finding:message", "message", repr(message))
            return Result(outcome_key("reject", message), detail=message)
        problem = _image_problem(header, image)
        if problem:
            return Result("finding:bad-image", "bad-image", problem)
        return Result("ok", raw_sha256=image.sha256())


# Supervisor self-test (tests/test_fuzz.py): the 50th decode of a worker segfaults
# ("crash") or never returns ("hang").
SELFTEST = os.environ.get("COOLCHIC_FUZZ_SELFTEST", "")


def _selftest_failure() -> None:
    if SELFTEST == "crash":
        ctypes.string_at(0)
    while SELFTEST == "hang":
        time.sleep(1)


def _trace() -> str:
    return "".join(traceback.format_exc(limit=20))[-4000:]


def _image_problem(header, image) -> str:
    """Why a decoded image does not match its header (spec 8.3), or ''."""
    if header is None:
        return "decoded a stream whose header does not parse"
    h, w = header.height, header.width
    shapes = [(h, w)] * header.n_channels
    if header.color_format.chroma_420:
        shapes[1:] = [((h + 1) // 2, (w + 1) // 2)] * 2
    dtype = np.uint8 if header.bit_depth == 8 else np.uint16
    got = [(p.shape, p.dtype) for p in image.planes]
    if got != [(s, np.dtype(dtype)) for s in shapes]:
        return f"planes {got}, expected shapes {shapes} of {np.dtype(dtype)}"
    top = (1 << header.bit_depth) - 1
    if any(int(p.max(initial=0)) > top for p in image.planes):
        return f"sample above {top}"
    return ""
