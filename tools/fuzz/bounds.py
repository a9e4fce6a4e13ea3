"""Time and memory bounds of spec 9.3 for a header-valid stream."""

from __future__ import annotations

# Memory: the reference decoder holds at most PLANES int32 planes of H x (W + 6)
# (spec 9): two synthesis stages of at most C_max channels, the dense latent
# and its padded copy (2 N), and 16 planes for latents, upsampling and sample
# conversion; plus copies of the stream and a constant.
#
# The constant (spec 9.3) is what no input is responsible for, derived from
# measurements of 2026-11-22 (tools/fuzz-log.md):
# - thread stacks: a decode runs the grid decoder on at most min(threads, N) <= 7
#   Python threads, each mapping an 8 MiB stack (glibc's default, RLIMIT_STACK):
#   at most 56 MiB of address space (less when glibc reuses cached stacks of
#   finished threads). Measured in process after the warm-up, 3000 mutated
#   inputs: a slack of 0 passes with 1 thread; with 2 threads 4 MiB passes and 0
#   does not (a thread that cannot start leaves Thread.start() waiting forever).
# - small arrays and Python objects: at most 10 MiB (peak RSS of the CLI over
#   its peak on the 1x1 seed, less the picture terms, on the conformance
#   streams, the seeds and the regression streams: 3.6 MiB writing .raw, as the
#   CLI check does; 9.4 MiB writing PNG).
# Together at most 66 MiB: 128 MiB leaves a factor of 2. Address space that glibc
# reserves for per-thread malloc arenas but does not allocate is not memory of
# spec 9.3: the in-process limit keeps it out (`oracle.single_malloc_arena`) and
# the CLI check measures resident memory (`cli_check.cli_baseline_rss`).
FIXED_MEMORY = 128 << 20
STREAM_COPIES = 16  # bytes per stream byte: copies, word arrays, the weights bit string


def planes_bound(c_max: int, n_grids: int) -> int:
    """Number of W x H int32 planes the decoder may hold at once (spec 9)."""
    return 2 * max(c_max, n_grids) + 2 * n_grids + 16


def memory_bound(header, stream_bytes: int) -> int:
    """Bytes a decode of this (header-valid) stream may allocate beyond its start (spec 9)."""
    c_max = max(layer.out_channels for layer in header.syn_layers)
    planes = planes_bound(c_max, header.n_grids)
    return (
        4 * header.height * (header.width + 6) * planes
        + STREAM_COPIES * stream_bytes
        + FIXED_MEMORY
    )


def declared_work(header) -> int:
    """Work units the header declares (spec 9): MAC of the ARM, upsampling and synthesis,
    entropy decoding (log2 K per latent), sample conversion, weights and bytes."""
    from coolchic_ref.info import parameter_counts, upsampled_samples

    pixels = header.width * header.height
    coded = [g for g in header.grids if not g.is_constant]
    latents = sum(g.height * g.width for g in coded)
    entropy = sum(g.height * g.width * g.alphabet_size.bit_length() for g in coded)
    return (
        header.mac_arm * latents
        + 64 * entropy
        + header.ups_half_taps * upsampled_samples(header)
        + header.mac_syn * pixels
        + 64 * pixels * header.n_channels
        + 256 * parameter_counts(header)["total"]
        + header.total_bytes
    )


# Time bound: FIXED seconds + work / RATE. The jitted decoder does about 1e10 work
# units per second on one core of the project's machines; RATE leaves 100x of slack
# for a loaded machine. Without JIT the kernels are Python (about 1e5 units/s).
TIME_FIXED = {True: 1.0, False: 30.0}
TIME_RATE = {True: 1e8, False: 2e4}


def time_bound(header, jit: bool = True) -> float:
    """Seconds a decode of this header-valid stream may take (spec 9: linear in the work)."""
    return TIME_FIXED[jit] + declared_work(header) / TIME_RATE[jit]
