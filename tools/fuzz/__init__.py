"""Fuzzing harness of the coolchic-ref decoder (spec bitstream-v1.md, section 9).

Every input must end in exactly one of two outcomes: a decoded picture, or
`StreamError` with a one-line message; never another exception, a crash, a
time beyond `time_bound` (derived from the declared work, i.e. the MAC budget
of the declared picture) or memory beyond `memory_bound` (derived from the
declared picture size and the limits of spec 3.4). That is what section 9 of
the spec requires and what the oracle (`Oracle.run`) checks, nothing more.

Commands (from the repository root):

    python -m tools.fuzz run --seconds 3600 --mode mutate --corpus DIR --crashes DIR
    python -m tools.fuzz run --seconds 600 --mode atheris --corpus DIR --crashes DIR
    python -m tools.fuzz run --seconds 600 --mode mutate --nojit ...   # NUMBA_DISABLE_JIT=1
    python -m tools.fuzz replay FILE...          # outcome of each file under the oracle
    python -m tools.fuzz make-seeds DIR          # small valid seed streams (needs the encoder)

(`run` may be omitted: `python -m tools.fuzz --seconds 60 ...`.)

Modules, in the order an input meets them:
- `layout`: header fields (offsets, formats, allowed ranges, from the decoder's
  syntax table) and section ranges of any byte string, for the byte-level mutators;
- `model`: a parsed stream as plain integers that can be rewritten and
  re-serialised (`Model`), and synthetic valid streams without an encoder;
- `mutate`: the structure-aware mutations (`Mutator`);
- `spec_rules`: rejection rules 1-6 and 7a of spec 9 (the relations between
  fields, the weights and substream rules written again from the spec), against
  which the oracle checks the decoder's decision;
- `bounds`: the time and memory bounds of spec 9.3 for a header;
- `oracle`: decodes one input under those bounds and judges the outcome;
- `slot`: the shared file mapping through which the supervisor sees the input
  being decoded and its deadline;
- `corpus`: seed streams, corpus directories and saved findings;
- `cli_check`: the `coolchic-ref decode` subprocess check and peak-RSS
  measurements;
- `worker`, `atheris_worker`: the mutation loop and the libFuzzer entry;
- `supervisor`: runs workers, restarts dead ones, kills hung ones;
- `cli`: the command line.

Design:
- Inputs are mutations of small valid seed streams (tests/fuzz_seeds/, 1x1 to
  24x16 pictures, 1 to 7 grids), so one decode takes about a millisecond with the
  warm Numba kernels. Mutators know the header layout (`header_fields`, from
  `coolchic_ref.syntax`'s table of fields and limits): boundary and out-of-range
  field values, inflated sizes and counts, section lengths changed together
  with the sections so that mutations reach the weights reader and the entropy
  decoder, flips/inserts/deletions/truncations, and model-level rewrites
  (hostile weights, architectures, alphabets, zero-length substreams) that
  re-encode a valid stream around them.
- Decoding runs in a worker subprocess, with NUMBA_NUM_THREADS=1 by default.
  Before each decode the worker copies the input and its deadline into a
  shared file mapping; the supervisor polls it, kills a worker that passes its
  deadline (a hang) and restarts a worker that dies (a Numba kernel that
  indexes out of bounds may segfault), saving the input either way.
- Memory: before each decode the worker sets its address-space limit
  (RLIMIT_AS) to its current virtual size plus `memory_bound(input)`; any
  larger allocation fails (MemoryError, also inside Numba kernels) and is a
  finding. This bounds every allocation (NumPy, Numba's NRT, Python, thread
  stacks), touched or not; glibc's per-thread malloc arenas, address space
  reserved but not allocated, are kept out (`single_malloc_arena`). The CLI
  sample check measures the real peak RSS of a `coolchic-ref decode`
  subprocess (its own VmHWM at exit) against the peak of the CLI decoding the
  1x1 seed plus the same bound (`cli_baseline_rss`); `measure_decode`
  measures the peak growth during one decode.
- Every `--cli-every` seconds the worker runs the `coolchic-ref decode` CLI on a
  recent input in a subprocess (default thread count): exit code 0 with the
  in-process result's exact raw samples, or 2 with one line on stderr; no file
  other than the requested output, no output at all on rejection.
- With `--nojit` the kernels run as Python (NUMBA_DISABLE_JIT=1), where an
  out-of-bounds index raises IndexError instead of reading garbage: any
  exception other than StreamError is a finding. Slow: tiny seeds only.
- `--mode atheris` runs libFuzzer (atheris) with Python coverage of the parser,
  the weights reader and the pipeline (with --nojit, of the kernels too), and
  these structure-aware mutations as its custom mutator.
"""

from tools.fuzz.bounds import memory_bound, time_bound
from tools.fuzz.cli_check import cli_baseline_rss, measure_decode, run_cli, run_cli_check
from tools.fuzz.corpus import DEFAULT_SEEDS, load_corpus, make_seeds
from tools.fuzz.layout import (
    Sections,
    declared_pixels,
    header_fields,
    header_size,
    read_field,
    sections,
    write_field,
)
from tools.fuzz.model import MAX_MAC_ARM_ARCH, MAX_MAC_SYN_ARCH, Model, synthetic_stream
from tools.fuzz.mutate import Mutator
from tools.fuzz.oracle import Oracle, Result
from tools.fuzz.spec_rules import spec_verdict

__all__ = [
    "DEFAULT_SEEDS",
    "MAX_MAC_ARM_ARCH",
    "MAX_MAC_SYN_ARCH",
    "Model",
    "Mutator",
    "Oracle",
    "Result",
    "Sections",
    "cli_baseline_rss",
    "declared_pixels",
    "header_fields",
    "header_size",
    "load_corpus",
    "make_seeds",
    "measure_decode",
    "memory_bound",
    "read_field",
    "run_cli",
    "run_cli_check",
    "sections",
    "spec_verdict",
    "synthetic_stream",
    "time_bound",
    "write_field",
]
