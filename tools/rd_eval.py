"""Rate-distortion evaluation: encode images at several lambdas, verify, log one TSV row each.

    python tools/rd_eval.py --images ../shared/data/kodak/kodim0{1,2,3,4}.png \\
        --lmbdas 0.0004,0.001,0.004,0.01 --preset medium --results results/rd.tsv \\
        [--jobs 1] [--scheduler local | --scheduler tcp://HOST:8786] [--threads N] \\
        [--device auto] [--workdir results/streams]

Every (image, lambda, preset) is encoded with `coolchic-ref encode` in a subprocess,
then decoded with `coolchic-ref decode`. The numbers written are measured, not
claimed: bpp is the stream file size x 8 / pixels, PSNR is computed from the decoded
samples against the original (RGB, 8-bit peak 255, MSE over all samples). The
encoder's JSON gives MAC per pixel and its own timing; its claimed PSNR is kept in
the column `psnr_encoder` for comparison, and a mismatch is reported.

Resumable: one row is appended, flushed and fsynced per finished encode; on restart
the combinations already in the results file are skipped, and an encode that was
interrupted goes on from its last checkpoint (the encoder's `--workdir` / `--resume`,
in `<workdir>/<image>_<preset>_l<lambda>.<options hash>.work`, removed once the encode
is done). A failed encode is logged (stdout and <results>.errors.log) and skipped; the
exit code is 1 if any failed.

Where the encodes run: without --scheduler, `--jobs` encodes at a time on this
machine. `--scheduler local` starts a dask.distributed LocalCluster of `--jobs`
workers (default: one per core), each running one encode at a time with `--threads`
CPU threads (default: cores / workers), so that workers x threads does not exceed the
cores (numbers asked for that do are warned about). `--scheduler tcp://HOST:PORT` uses
a running Dask cluster: each encode gets the cores of its machine divided by the Dask
threads on that machine; the workers must see the images, the work directory and
`coolchic-ref` at the same paths (a shared file system). Either way this process
writes every row as its encode completes.
Needs `pip install ".[encoder,cluster]"`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

# Columns written by this tool, in this order. Readers must go by header name.
COLUMNS: tuple[str, ...] = (
    "image",
    "lmbda",
    "preset",
    "bytes",
    "bpp",
    "psnr_rgb",
    "mac_per_pixel",
    "encode_seconds",
    "decode_seconds",
    "stream",
    "width",
    "height",
    "psnr_encoder",
    "encode_wall_seconds",
    "decode_wall_seconds",
    "image_path",
    "finished_utc",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("image", "lmbda", "preset", "bpp", "psnr_rgb")
CONNECT_TIMEOUT = "30s"  # to reach the scheduler given by --scheduler tcp://...

Key = tuple[str, float, str]


@dataclass(frozen=True)
class Job:
    """One encode to run: an image at one lambda and preset."""

    image_path: Path
    lmbda: float
    preset: str

    @property
    def image(self) -> str:
        """The image name used in results and anchors (file stem, e.g. kodim01)."""
        return self.image_path.stem

    @property
    def key(self) -> Key:
        return make_key(self.image, self.lmbda, self.preset)

    def stem(self) -> str:
        """Base name of this job's files in the work directory."""
        return f"{self.image}_{self.preset}_l{format_lmbda(self.lmbda)}"


def format_lmbda(lmbda: float) -> str:
    """Shortest text that reads back as the same float (0.0004 -> '0.0004')."""
    return repr(float(lmbda))


def make_key(image: str, lmbda: float | str, preset: str) -> Key:
    """The identity of one result row: (image stem, lambda, preset)."""
    return (str(image), float(lmbda), str(preset))


def parse_lmbdas(text: str) -> list[float]:
    """'0.001,0.004' -> [0.001, 0.004]; rejects non-positive or non-finite values."""
    values = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        value = float(part)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"lambda must be a positive number, got {part!r}")
        values.append(value)
    if not values:
        raise ValueError("no lambda given")
    return values


# ----------------------------------------------------------------------------- TSV


def read_results(path: Path, required: Sequence[str] = REQUIRED_COLUMNS) -> list[dict[str, str]]:
    """Rows of a results TSV as dicts keyed by header name.

    A missing or empty file gives no rows. Lines with the wrong number of fields
    (e.g. a row cut short by a crash) and comment lines (#) are ignored; a header
    without the `required` columns is a ValueError.
    """
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}: header lacks column(s) {', '.join(missing)}")
    rows = []
    for line in lines[1:]:
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            continue
        rows.append(dict(zip(header, fields, strict=True)))
    return rows


def done_keys(path: Path) -> set[Key]:
    """The (image, lambda, preset) combinations already in the results file."""
    keys = set()
    for row in read_results(path):
        try:
            keys.add(make_key(row["image"], row["lmbda"], row["preset"]))
        except ValueError:
            continue
    return keys


def pending_jobs(jobs: Iterable[Job], done: set[Key]) -> list[Job]:
    """The jobs whose key is not in `done`, in order, without duplicates."""
    seen = set(done)
    pending = []
    for job in jobs:
        if job.key in seen:
            continue
        seen.add(job.key)
        pending.append(job)
    return pending


def make_jobs(images: Sequence[Path], lmbdas: Sequence[float], preset: str) -> list[Job]:
    """All combinations, lambda-major: each lambda is completed for all images first,
    so that points of the average curve become available early."""
    return [Job(Path(image), lmbda, preset) for lmbda in lmbdas for image in images]


class ResultsWriter:
    """Appends rows to a TSV, one durable write (flush + fsync) per row, thread-safe.

    Keeps the column order of an existing file's header; writes our header to a new
    or empty file; repairs a last line left without its newline by a crash.
    """

    def __init__(
        self,
        path: Path,
        columns: Sequence[str] = COLUMNS,
        required: Sequence[str] = REQUIRED_COLUMNS,
    ) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        existing = path.read_text(encoding="utf-8") if path.exists() else ""
        if existing.strip():
            self.columns = existing.splitlines()[0].split("\t")
            missing = [c for c in required if c not in self.columns]
            if missing:
                raise ValueError(f"{path}: header lacks column(s) {', '.join(missing)}")
            if not existing.endswith("\n"):
                self._write_durably("\n")
        else:
            self.columns = list(columns)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write("\t".join(self.columns) + "\n")
                handle.flush()
                os.fsync(handle.fileno())

    def _write_durably(self, text: str) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def append(self, row: dict[str, object]) -> None:
        """Append one row; unknown keys are dropped, missing columns left empty."""
        fields = []
        for column in self.columns:
            value = row.get(column, "")
            text = "" if value is None else str(value)
            fields.append(text.replace("\t", " ").replace("\n", " "))
        with self._lock:
            self._write_durably("\t".join(fields) + "\n")


# ----------------------------------------------------------------------------- measuring


def read_image(path: Path) -> np.ndarray:
    """An image as an array of shape (H, W, C) (C = 1 for grey)."""
    import imageio.v3 as iio

    array = np.asarray(iio.imread(path))
    if array.ndim == 2:
        array = array[:, :, None]
    return array


def center_crop(array: np.ndarray, size: int) -> np.ndarray:
    """The size x size centre of an (H, W, ...) array: rows from (H - size) // 2, columns
    from (W - size) // 2 (the convention of the `<stem>-crop<size>` pictures)."""
    height, width = array.shape[:2]
    if not 0 < size <= min(height, width):
        raise ValueError(f"cannot crop {size}x{size} from a {width}x{height} picture")
    top, left = (height - size) // 2, (width - size) // 2
    return array[top : top + size, left : left + size]


def mse(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Mean squared difference over all samples and channels, in sample units."""
    if reference.shape != decoded.shape:
        raise ValueError(f"shape mismatch: original {reference.shape}, decoded {decoded.shape}")
    diff = reference.astype(np.float64) - decoded.astype(np.float64)
    return float(np.mean(diff * diff))


def psnr(reference: np.ndarray, decoded: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB with MSE over all samples and channels; inf when identical."""
    mse_value = mse(reference, decoded)
    if mse_value == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse_value)


def decoded_psnr(original: Path, decoded: Path) -> float:
    """RGB PSNR (8-bit peak) of a decoded PNG against the original PNG.

    A 16-bit decoded picture of an 8-bit original is brought to 8 bits (x / 257).
    16-bit RGB PNGs are refused: Pillow would read them as 8-bit, dropping bits.
    """
    with open(decoded, "rb") as handle:
        header = handle.read(26)
    if (
        len(header) == 26
        and header[:8] == b"\x89PNG\r\n\x1a\n"
        and header[24] == 16
        and header[25] in (2, 6)
    ):
        raise ValueError(f"{decoded}: 16-bit RGB PNG, cannot be measured (8-bit sources only)")
    ref = read_image(original)
    dec = read_image(decoded)
    if ref.shape[2] == 4:  # alpha is not coded
        ref = ref[:, :, :3]
    if dec.dtype == np.uint16 and ref.dtype == np.uint8:
        dec = np.rint(dec.astype(np.float64) / 257.0)
    peak = 255.0 if ref.dtype == np.uint8 else float(np.iinfo(ref.dtype).max)
    return psnr(ref, dec, peak)


def format_float(value: float | None, digits: int = 6) -> str:
    """Fixed text for a TSV cell; empty for None."""
    if value is None:
        return ""
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


@dataclass
class Tools:
    """How to call the codec: command prefixes and pass-through options."""

    encoder_cmd: list[str]
    decoder_cmd: list[str]
    device: str | None = None
    encoder_args: list[str] | None = None
    timeout_s: float | None = None
    keep_decoded: bool = False
    env: dict[str, str] | None = None  # environment of the subprocesses (None: inherited)


def thread_env(n_parallel: int, n_cpus: int | None = None) -> dict[str, str] | None:
    """The environment that shares the CPU cores between `n_parallel` encodes.

    Each encoder (Torch, OpenMP) starts one thread per core by default; several of them
    on the same cores spin against each other: measured on 2 cores, one training
    iteration went from 0.25 s to over 2 s with two 2-thread processes. With more than
    one job, each gets `n_cpus // n_parallel` threads (at least 1), unless the user has
    set OMP_NUM_THREADS.
    """
    if n_parallel <= 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    n_cpus = n_cpus or os.cpu_count() or 1
    threads = str(max(1, n_cpus // n_parallel))
    return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
            "NUMBA_NUM_THREADS": threads}  # fmt: skip


def threads_env(threads: int) -> dict[str, str]:
    """This process's environment with `threads` CPU threads for Torch, OpenMP, MKL and
    Numba (what one encode of a Dask worker gets)."""
    n = str(max(1, threads))
    return {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "NUMBA_NUM_THREADS": n}


def plan_local_cluster(
    n_cpus: int, jobs: int | None, threads: int | None
) -> tuple[int, int, str | None]:
    """(workers, threads per encode, warning or None) of a LocalCluster on `n_cpus` cores.

    Each worker runs one encode at a time. Unset numbers are chosen so that workers x
    threads <= cores: neither set gives one single-threaded worker per core; the
    warning says when the numbers asked for oversubscribe the cores.
    """
    if jobs is not None and jobs < 1 or threads is not None and threads < 1:
        raise ValueError("--jobs and --threads must be at least 1")
    if jobs is None:
        jobs = max(1, n_cpus // (threads or 1))
    if threads is None:
        threads = max(1, n_cpus // jobs)
    warning = None
    if jobs * threads > n_cpus:
        warning = (
            f"{jobs} workers x {threads} thread(s) oversubscribe the {n_cpus} core(s): "
            "encodes will slow each other down"
        )
    return jobs, threads, warning


def _run_logged(
    cmd: list[str], log: Path, timeout: float | None, env: dict[str, str] | None = None
) -> tuple[int, float]:
    """Run `cmd` with stdout+stderr appended to `log`; (exit code, wall seconds)."""
    start = time.perf_counter()
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {shlex.join(cmd)}\n")
        handle.flush()
        try:
            proc = subprocess.run(
                cmd,
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
                env=env,
            )
            code = proc.returncode
        except subprocess.TimeoutExpired:
            handle.write(f"timed out after {timeout} s\n")
            code = 124
    return code, time.perf_counter() - start


def _log_tail(log: Path, n: int = 5) -> str:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    lines = [line.strip() for line in lines if line.strip() and line[:2] not in ("$ ", "# ")]
    return " | ".join(lines[-n:])


def _parse_decode_seconds(log: Path) -> float | None:
    """The in-process decode time printed by `coolchic-ref decode` ('decoded in X s')."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    marker = "decoded in "
    position = text.rfind(marker)
    if position < 0:
        return None
    try:
        return float(text[position + len(marker) :].split()[0])
    except (IndexError, ValueError):
        return None


class EncodeError(RuntimeError):
    """An encode, decode or verification that failed; the message says which."""


def run_job(job: Job, workdir: Path, tools: Tools) -> dict[str, object]:
    """Encode, decode and measure one job; the result row. Raises EncodeError."""
    workdir.mkdir(parents=True, exist_ok=True)
    stream = workdir / f"{job.stem()}.cool"
    meta = workdir / f"{job.stem()}.json"
    decoded = workdir / f"{job.stem()}.decoded.png"
    log = workdir / f"{job.stem()}.log"
    for stale in (stream, meta, decoded):
        stale.unlink(missing_ok=True)
    log.write_text(f"# {datetime.now(timezone.utc).isoformat()} {job.stem()}\n", encoding="utf-8")

    options = ["--lmbda", format_lmbda(job.lmbda), "--preset", job.preset]
    if tools.device:
        options += ["--device", tools.device]
    options += tools.encoder_args or []
    # The encoder's checkpoints: an encode interrupted with the run goes on from its last
    # one (every `eval_every` iterations) when the run is started again. Named after the
    # options too, so that another run's checkpoint is never offered.
    key = hashlib.sha256(shlex.join([str(job.image_path), *options]).encode()).hexdigest()
    checkpoints = workdir / f"{job.stem()}.{key[:8]}.work"
    cmd = [*tools.encoder_cmd, "encode", str(job.image_path), "-o", str(stream), *options]
    cmd += ["--json", str(meta), "--workdir", str(checkpoints), "--resume"]
    code, encode_wall = _run_logged(cmd, log, tools.timeout_s, tools.env)
    if code != 0:
        raise EncodeError(f"encoder exit code {code} (log {log}: {_log_tail(log)})")
    shutil.rmtree(checkpoints, ignore_errors=True)  # done: the stream and its row are kept
    if not stream.exists() or stream.stat().st_size == 0:
        raise EncodeError(f"encoder wrote no stream {stream}")
    claims: dict[str, object] = {}
    if meta.exists():
        try:
            claims = json.loads(meta.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise EncodeError(f"unreadable encoder JSON {meta}: {error}") from None

    cmd = [*tools.decoder_cmd, "decode", str(stream), "-o", str(decoded)]
    code, decode_wall = _run_logged(cmd, log, tools.timeout_s, tools.env)
    if code != 0 or not decoded.exists():
        raise EncodeError(f"decoder exit code {code} (log {log}: {_log_tail(log)})")
    try:
        quality = decoded_psnr(job.image_path, decoded)
    except ValueError as error:
        raise EncodeError(str(error)) from None
    height, width = read_image(job.image_path).shape[:2]
    if not tools.keep_decoded:
        decoded.unlink(missing_ok=True)

    n_bytes = stream.stat().st_size
    bpp = 8.0 * n_bytes / (width * height)
    warnings = []
    # `coolchic-ref encode --json` names it psnr_db (psnr: older encoders, stand-ins).
    claimed_psnr = _as_float(claims.get("psnr_db", claims.get("psnr")))
    if claimed_psnr is not None and abs(claimed_psnr - quality) > 0.01:
        warnings.append(f"encoder claims {claimed_psnr:.4f} dB, decoded {quality:.4f} dB")
    claimed_bpp = _as_float(claims.get("bpp"))
    if claimed_bpp is not None and abs(claimed_bpp - bpp) > 1e-6 * max(1.0, bpp):
        warnings.append(f"encoder claims {claimed_bpp:.6f} bpp, file gives {bpp:.6f} bpp")
    for warning in warnings:
        print(f"  warning: {job.image} lmbda={format_lmbda(job.lmbda)}: {warning}", flush=True)

    encode_seconds = _as_float(claims.get("seconds"))
    decode_seconds = _parse_decode_seconds(log)
    return {
        "image": job.image,
        "lmbda": format_lmbda(job.lmbda),
        "preset": job.preset,
        "bytes": n_bytes,
        "bpp": format_float(bpp, 8),
        "psnr_rgb": format_float(quality, 6),
        "mac_per_pixel": format_float(_as_float(claims.get("mac_per_pixel")), 1),
        "encode_seconds": format_float(
            encode_seconds if encode_seconds is not None else encode_wall, 2
        ),
        "decode_seconds": format_float(
            decode_seconds if decode_seconds is not None else decode_wall, 4
        ),
        "stream": str(stream),
        "width": width,
        "height": height,
        "psnr_encoder": format_float(claimed_psnr, 6),
        "encode_wall_seconds": format_float(encode_wall, 2),
        "decode_wall_seconds": format_float(decode_wall, 3),
        "image_path": str(job.image_path),
        "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _as_float(value: object) -> float | None:
    try:
        return None if value is None else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------- driver


def evaluate(
    jobs: Sequence[Job],
    results: Path,
    workdir: Path,
    tools: Tools,
    n_parallel: int = 1,
    client: object | None = None,
    encode_threads: int | None = None,
) -> tuple[int, int, int]:
    """Run the jobs not yet in `results`; (done now, skipped, failed).

    With a dask.distributed `client`, the encodes run on its cluster (each with
    `encode_threads` CPU threads, or its machine's cores divided by the Dask threads
    there); otherwise `n_parallel` at a time in this process.
    """
    writer = ResultsWriter(results)
    todo = pending_jobs(jobs, done_keys(results))
    skipped = len(jobs) - len(todo)
    errors_log = results.with_name(results.name + ".errors.log")
    where = "on the Dask cluster" if client is not None else f"{n_parallel} at a time"
    print(
        f"{len(jobs)} encodes requested, {skipped} already in {results}, {len(todo)} to run "
        f"({where})",
        flush=True,
    )
    n_done = n_failed = 0
    lock = threading.Lock()
    start = time.perf_counter()

    def label(job: Job) -> str:
        return f"{job.image} lmbda={format_lmbda(job.lmbda)} preset={job.preset}"

    def failed(index: int, job: Job, error: BaseException) -> None:
        nonlocal n_failed
        message = f"FAILED {label(job)}: {type(error).__name__}: {error}"
        with lock:
            n_failed += 1
            with open(errors_log, "a", encoding="utf-8") as handle:
                stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                handle.write(f"{stamp}\t{message}\n")
        print(f"[{index}/{len(todo)}] {message}", flush=True)

    def finished(index: int, job: Job, row: dict[str, object]) -> None:
        nonlocal n_done
        writer.append(row)
        with lock:
            n_done += 1
            elapsed = time.perf_counter() - start
        print(
            f"[{index}/{len(todo)}] done {label(job)}: {row['bpp']} bpp, {row['psnr_rgb']} dB, "
            f"{row['mac_per_pixel'] or '?'} MAC/px, encode {row['encode_seconds']} s, "
            f"decode {row['decode_seconds']} s (elapsed {elapsed:.0f} s)",
            flush=True,
        )

    def one(index: int, job: Job) -> None:
        print(f"[{index}/{len(todo)}] start {label(job)}", flush=True)
        try:
            row = run_job(job, workdir, tools)
        except Exception as error:  # noqa: BLE001 - one failed encode must not stop the rest
            failed(index, job, error)
            return
        finished(index, job, row)

    if client is not None and todo:
        _evaluate_on_dask(client, todo, workdir, tools, encode_threads, finished, failed)
    elif n_parallel <= 1:
        for index, job in enumerate(todo, 1):
            one(index, job)
    else:
        pool = ThreadPoolExecutor(max_workers=n_parallel)
        try:
            futures = [pool.submit(one, index, job) for index, job in enumerate(todo, 1)]
            for future in as_completed(futures):
                future.result()
        except BaseException:
            # Ctrl-C: start no queued encode (running ones got the signal too).
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    print(f"finished: {n_done} done, {skipped} skipped, {n_failed} failed", flush=True)
    return n_done, skipped, n_failed


# ----------------------------------------------------------------------------- Dask


def run_job_on_worker(
    job: Job, workdir: Path, tools: Tools, threads: int | dict[str, int] | None
) -> dict[str, object]:
    """`run_job` inside a Dask task, the encode limited to `threads` CPU threads (a
    number, or one per worker address)."""
    if isinstance(threads, dict):
        from distributed import get_worker

        worker = get_worker()
        threads = threads.get(worker.address) or max(
            1, (os.cpu_count() or 1) // max(1, worker.state.nthreads)
        )
    if threads is not None:
        tools = dataclasses.replace(tools, env=threads_env(threads))
    return run_job(job, workdir, tools)


def threads_per_worker(client: object) -> dict[str, int]:
    """{worker address: CPU threads for one of its encodes}: the cores of its machine
    divided by the Dask threads of all workers on that machine (at least 1)."""
    workers = client.scheduler_info()["workers"]  # type: ignore[attr-defined]
    cpus = client.run(os.cpu_count)  # type: ignore[attr-defined]
    per_host: dict[str, int] = {}
    for info in workers.values():
        per_host[info["host"]] = per_host.get(info["host"], 0) + info["nthreads"]
    return {
        address: max(1, (cpus.get(address) or 1) // per_host[info["host"]])
        for address, info in workers.items()
    }


def _evaluate_on_dask(
    client: object,
    todo: Sequence[Job],
    workdir: Path,
    tools: Tools,
    encode_threads: int | None,
    finished: Callable[[int, Job, dict[str, object]], None],
    failed: Callable[[int, Job, BaseException], None],
) -> None:
    """Submit every job to the cluster; record each result here as it completes."""
    import cloudpickle
    from distributed import as_completed as dask_completed

    # Workers may not have this file on their import path: send its code with the task.
    module = sys.modules[run_job_on_worker.__module__]
    if module.__name__ != "__main__":
        cloudpickle.register_pickle_by_value(module)
    threads = encode_threads if encode_threads is not None else threads_per_worker(client)
    futures = {}
    for index, job in enumerate(todo, 1):
        # pure=False: a unique key, so a rerun (or another run on the same cluster) is a
        # new encode, never a result kept by the scheduler.
        future = client.submit(  # type: ignore[attr-defined]
            run_job_on_worker, job, workdir, tools, threads, pure=False
        )
        futures[future] = (index, job)
    print(f"submitted {len(futures)} encode(s) to {client}", flush=True)
    try:
        for future in dask_completed(futures):
            index, job = futures[future]
            try:
                row = future.result()
            except Exception as error:  # noqa: BLE001 - one failed encode must not stop the rest
                failed(index, job, error)
                continue
            finished(index, job, row)
    except BaseException:
        client.cancel(list(futures))  # type: ignore[attr-defined]
        raise


@contextlib.contextmanager
def dask_client(
    scheduler: str, jobs: int | None, threads: int | None
) -> Iterator[tuple[object, int | None]]:
    """(client, threads per encode or None) for `--scheduler local` or an address."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError(
            '--scheduler needs dask.distributed: pip install ".[encoder,cluster]"'
        ) from None
    if scheduler != "local":
        with Client(scheduler, timeout=CONNECT_TIMEOUT) as client:
            yield client, threads
        return
    n_workers, n_threads, warning = plan_local_cluster(os.cpu_count() or 1, jobs, threads)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    print(
        f"Dask LocalCluster: {n_workers} worker(s), one encode each at a time, "
        f"{n_threads} thread(s) per encode",
        flush=True,
    )
    # Worker threads in this process: each task only waits for its encode's subprocess,
    # so worker processes would add start-up time and nothing else.
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client, n_threads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog=(
            "Columns of the results TSV: " + ", ".join(COLUMNS) + ". bpp = 8 x stream bytes "
            "/ pixels; psnr_rgb from the decoded samples; encode_seconds is the encoder's own "
            "figure (its JSON 'seconds'), decode_seconds the decoder's 'decoded in X s' "
            "(both fall back to the subprocess wall time, kept in *_wall_seconds)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--images", nargs="+", type=Path, required=True, help="PNG images.")
    parser.add_argument(
        "--lmbdas", required=True, help="Comma-separated lambdas, e.g. 0.0004,0.001,0.004,0.01."
    )
    parser.add_argument("--preset", default="medium", help="Encoder preset (default: medium).")
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("results/rd.tsv"),
        help="Results TSV, appended to (default: results/rd.tsv).",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="Where streams, encoder JSON and logs go (default: <results dir>/streams).",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="Encodes run at the same time (default: 1; with --scheduler local: the number "
        "of workers, default cores / --threads).",
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="local|tcp://HOST:PORT",
        help="Run the encodes on Dask: 'local' starts a LocalCluster, an address uses a "
        "running cluster (default: no Dask).",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of each encode on Dask (default: local, cores / workers; on a "
        "cluster, the machine's cores / its Dask threads).",
    )
    parser.add_argument(
        "--device", default=None, help="Passed to the encoder as --device (e.g. auto, cpu, cuda)."
    )
    parser.add_argument(
        "--encoder-args",
        default="",
        help="Extra encoder options as one shell-quoted string; write it with '=' "
        "when it starts with '-': --encoder-args='--iterations 500'.",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="Seconds after which one encode is failed."
    )
    parser.add_argument(
        "--encoder-cmd", default="coolchic-ref", help="Encoder command prefix (shell-split)."
    )
    parser.add_argument(
        "--decoder-cmd", default="coolchic-ref", help="Decoder command prefix (shell-split)."
    )
    parser.add_argument(
        "--keep-decoded", action="store_true", help="Keep the decoded PNGs in the workdir."
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        lmbdas = parse_lmbdas(args.lmbdas)
    except ValueError as error:
        print(f"error: --lmbdas: {error}", file=sys.stderr)
        return 2
    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        print(f"error: no such image(s): {', '.join(missing)}", file=sys.stderr)
        return 2
    stems = [p.stem for p in args.images]
    if len(set(stems)) != len(stems):
        print("error: two images have the same file name (results key on it)", file=sys.stderr)
        return 2
    for option, command in (
        ("--encoder-cmd", args.encoder_cmd),
        ("--decoder-cmd", args.decoder_cmd),
    ):
        words = shlex.split(command)
        if not words or shutil.which(words[0]) is None:
            print(
                f"error: {option}: {command!r} not found (is coolchic-ref installed?)",
                file=sys.stderr,
            )
            return 2
    for option, value in (("--jobs", args.jobs), ("--threads", args.threads)):
        if value is not None and value < 1:
            print(f"error: {option} must be at least 1", file=sys.stderr)
            return 2
    if args.threads is not None and args.scheduler is None:
        print("error: --threads is for --scheduler (use --jobs alone)", file=sys.stderr)
        return 2
    n_parallel = args.jobs or 1
    workdir = args.workdir or args.results.parent / "streams"
    tools = Tools(
        encoder_cmd=shlex.split(args.encoder_cmd),
        decoder_cmd=shlex.split(args.decoder_cmd),
        device=args.device,
        encoder_args=shlex.split(args.encoder_args),
        timeout_s=args.timeout,
        keep_decoded=args.keep_decoded,
        env=None if args.scheduler else thread_env(n_parallel),
    )
    jobs = make_jobs(args.images, lmbdas, args.preset)
    try:
        if args.scheduler is None:
            _, _, failed = evaluate(jobs, args.results, workdir, tools, n_parallel)
        else:
            with contextlib.ExitStack() as stack:
                try:
                    client, threads = stack.enter_context(
                        dask_client(args.scheduler, args.jobs, args.threads)
                    )
                except (ValueError, OSError) as error:  # no dask, no cluster at that address
                    message = " ".join(str(error).split())
                    print(f"error: --scheduler {args.scheduler}: {message}", file=sys.stderr)
                    return 2
                _, _, failed = evaluate(
                    jobs, args.results, workdir, tools, client=client, encode_threads=threads
                )
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
