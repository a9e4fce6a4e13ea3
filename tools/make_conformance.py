"""Regenerate the conformance suite in tests/conformance/ (spec/conformance.md).

    python -m tools.make_conformance --reason "why the suite changes"
    python -m tools.make_conformance --check     # rebuild in memory, compare, write nothing

The suite is committed: run this only when the suite must change, and say why
(`--reason` is recorded in the manifest). The streams are made from the cases
of tools/conformance/cases.py, in three groups:

- generator-made: integer codecs drawn by
  `coolchic_ref.encoder.random_codec.random_codec` from a fixed seed, some
  changed by named edits (tools/conformance/edits.py: designed weights and
  latents that drive the entropy model, the accumulators and the samples to
  the bounds of the spec); streams written by the encoder's writer `write_stream`;
- encoder-made: small crops of Kodak photographs encoded by the real encoder
  (`coolchic_ref.encoder.api.encode`). Training depends on the torch build, so
  committed encoder-made streams are kept as they are unless named by
  `--reencode` (or their recipe changed, which is an error);
- invalid: streams that spec section 9 rejects, made by editing a valid
  stream; the manifest records the rule.

The expected samples of every valid stream come from the ENCODER's integer
simulation (`integer_model.simulate_decode`) of the stream's integer codec,
never from the reference decoder; for a stream that is kept rather than
rebuilt, the codec is read back by `tools.conformance.reading.read_codec`
(constriction and the encoder's integer ARM for the substreams). Then the
reference decoder must reproduce every hash and reject every invalid stream
for the stated reason: if it does not, nothing is written. Needs NumPy and
constriction; torch only for (re)encoding photographs.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from coolchic_ref.encoder import integer_model as im
from coolchic_ref.encoder.bitstream import IntegerCodec, write_stream
from coolchic_ref.encoder.random_codec import random_codec
from coolchic_ref.syntax import ColorFormat
from tools.conformance.cases import (
    ENCODER_CASES,
    GENERATOR_CASES,
    INVALID_CASES,
    EncoderCase,
    GeneratorCase,
    InvalidCase,
)
from tools.conformance.edits import CODEC_EDITS, INVALID_EDITS, STREAM_EDITS
from tools.conformance.features import (
    REQUIRED_FEATURES,
    latent_sensitivity,
    syntax_classes,
    value_classes,
)
from tools.conformance.gap_cases import (
    GAP_GENERATOR_CASES,
    GAP_INVALID_CASES,
    GapCase,
    GapInvalidCase,
)
from tools.conformance.reading import read_codec, stream_layout
from tools.conformance.v2_cases import V2_ENCODER_CASES, V2_GENERATOR_CASES, V2_INVALID_CASES

if TYPE_CHECKING:
    from coolchic_ref.encoder.image_io import Picture

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "tests" / "conformance"
KODAK = ROOT.parent / "shared" / "data" / "kodak"
MANIFEST_FORMAT = 1


# ---------------------------------------------------------------------------
# Cases -> streams


def recipe(case: GeneratorCase | EncoderCase | InvalidCase) -> str:
    """How the case's stream is made, as the manifest records it."""
    if isinstance(case, InvalidCase):
        return f"{case.edit}({case.base})"
    options = ", ".join(f"{key}={value!r}" for key, value in case.options.items())
    if isinstance(case, EncoderCase):
        top, left, height, width = case.crop
        return (
            f"encode({case.image}.png[{top}:{top + height}, {left}:{left + width}] as "
            f"{case.convert}, {options})"
        )
    text = f"random_codec(default_rng({case.seed}), {options})"
    if case.edits:
        text += ", then " + ", ".join(case.edits)
    if case.stream_edit is not None:
        text += f", stream edited by {case.stream_edit}"
    return text


def build_codec(case: GeneratorCase) -> IntegerCodec:
    """The case's codec: drawn by `random_codec`, then changed by its edits in turn."""
    codec = random_codec(np.random.default_rng(case.seed), **case.options)
    for name in case.edits:
        CODEC_EDITS[name](codec)
    return codec


def build_stream(case: GeneratorCase) -> tuple[bytes, IntegerCodec]:
    """(stream, the codec whose simulation gives the expected samples)."""
    codec = build_codec(case)
    data = write_stream(codec)
    if case.stream_edit is not None:
        data = STREAM_EDITS[case.stream_edit](data)
    return data, codec


def invalid_stream(case: InvalidCase, base: bytes) -> bytes:
    """The invalid stream of `case`, made from the stream of its base case."""
    return INVALID_EDITS[case.edit](base)


def case_picture(case: EncoderCase) -> Picture:
    """The picture of an encoder case: the converted crop, as an encoder `Picture`."""
    import imageio.v3 as iio

    from coolchic_ref.encoder.image_io import Picture

    top, left, height, width = case.crop
    rgb = iio.imread(KODAK / f"{case.image}.png")[top : top + height, left : left + width]
    rgb = np.ascontiguousarray(rgb[..., :3])
    source = f"{case.image}-crop"
    if case.convert == "rgb":
        return Picture([rgb[..., c].copy() for c in range(3)], int(ColorFormat.RGB), 8, source)
    # BT.709 luma and colour differences of the gamma-coded RGB, limited range.
    x = rgb.astype(np.float64) / 255
    y = 0.2126 * x[..., 0] + 0.7152 * x[..., 1] + 0.0722 * x[..., 2]
    pb = (x[..., 2] - y) / 1.8556
    pr = (x[..., 0] - y) / 1.5748
    if case.convert == "grey":
        return Picture([np.rint(255 * y).astype(np.uint8)], int(ColorFormat.GREY), 8, source)
    bits = 8 if case.convert == "yuv444-8" else 10
    scale = 1 << (bits - 8)
    planes = [
        16 * scale + 219 * scale * y,
        128 * scale + 224 * scale * pb,
        128 * scale + 224 * scale * pr,
    ]
    if case.convert == "yuv420-10":
        for c in (1, 2):  # 2x2 means, the last row / column repeated for odd sizes
            p = np.pad(planes[c], ((0, height % 2), (0, width % 2)), mode="edge")
            planes[c] = (p[0::2, 0::2] + p[0::2, 1::2] + p[1::2, 0::2] + p[1::2, 1::2]) / 4
    dtype = np.uint8 if bits == 8 else np.uint16
    planes = [np.clip(np.rint(p), 0, (1 << bits) - 1).astype(dtype) for p in planes]
    color_format = ColorFormat.YUV420 if case.convert == "yuv420-10" else ColorFormat.YUV444
    return Picture(planes, int(color_format), bits, source)


def encode_case(case: EncoderCase) -> tuple[bytes, list[np.ndarray]]:
    """Encode one photograph crop with the real encoder: (stream, its predicted planes).

    The encoder verifies its stream against the reference decoder itself (closed
    loop); the planes are its integer simulation's.
    """
    from coolchic_ref.encoder.api import encode

    options = dict(case.options)
    lmbda = options.pop("lmbda")
    preset = options.pop("preset")
    # The encoder writes version 2 by default; these recipes were made (and recorded)
    # when it wrote version 1, which a case says only when it wants another version.
    options.setdefault("version", 1)
    result = encode(case_picture(case), lmbda=lmbda, preset=preset, **options)
    return result.stream, result.planes


# ---------------------------------------------------------------------------
# Assembling, checking and writing the suite


@dataclass
class Built:
    """One stream of the suite, ready to write."""

    name: str
    data: bytes
    entry: dict
    raw: bytes | None  # canonical raw samples (None for a rejected stream)
    planes: list[np.ndarray] | None = None
    sensitivity: tuple[int, int] = (0, 0)  # see `latent_sensitivity`


def _valid_entry(
    name: str,
    description: str,
    origin: str,
    recipe: str,
    data: bytes,
    codec: IntegerCodec,
    planes: list[np.ndarray],
) -> Built:
    raw = im.canonical_raw_bytes(planes, codec.bit_depth)
    features = sorted(syntax_classes(codec, stream_layout(data)) | value_classes(codec))
    entry = {
        "stream": f"{name}.cool",
        "description": description,
        "origin": origin,
        "recipe": recipe,
        "width": codec.width,
        "height": codec.height,
        "color_format": codec.color_format,
        "bit_depth": codec.bit_depth,
        "bytes": len(data),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "expected": f"{name}.raw.gz",
        "features": features,
    }
    return Built(name, data, entry, raw, planes, latent_sensitivity(codec))


# Streams 001-049, then the mutation-analysis gap cases (numbered from 050 by their own
# `number`); a gap case builds itself and checks the misreadings it exposes.
V1_GENERATOR_CASES: list[GeneratorCase | GapCase] = [*GENERATOR_CASES, *GAP_GENERATOR_CASES]
V1_INVALID_CASES: list[InvalidCase | GapInvalidCase] = [*INVALID_CASES, *GAP_INVALID_CASES]
# Every case of the suite, version 2 included (spec/bitstream-v2.md).
ALL_GENERATOR_CASES = [*V1_GENERATOR_CASES, *V2_GENERATOR_CASES]
ALL_INVALID_CASES = [*V1_INVALID_CASES, *V2_INVALID_CASES]


def case_stream(case: GeneratorCase | GapCase) -> tuple[bytes, IntegerCodec]:
    """(stream, codec) of any generator case."""
    return build_stream(case) if isinstance(case, GeneratorCase) else case.build()


def case_recipe(case: GeneratorCase | GapCase | InvalidCase | GapInvalidCase) -> str:
    """The manifest's recipe of any case."""
    if isinstance(case, GapInvalidCase):
        return f"{case.mutate.__name__}({case.base})"
    return case.recipe() if isinstance(case, GapCase) else recipe(case)


def case_invalid_stream(case: InvalidCase | GapInvalidCase, base: bytes) -> bytes:
    """The invalid stream of any invalid case, made from its base stream."""
    return invalid_stream(case, base) if isinstance(case, InvalidCase) else case.mutate(base)


def build_generator(case: GeneratorCase | GapCase, number: int) -> Built:
    (data, codec), how = case_stream(case), case_recipe(case)
    planes = im.simulate_decode(codec)
    name = f"{number:03d}-{case.slug}"
    return _valid_entry(name, case.description, "generator", how, data, codec, planes)


def build_encoder(
    case: EncoderCase,
    number: int,
    existing: Path | None,
    committed_recipe: str | None,
    reencode: bool,
) -> Built:
    """Encode the crop; or, if a stream of that slug exists and not `reencode`, keep it
    (its committed recipe must still be the case's: otherwise re-encode it)."""
    name = f"{number:03d}-{case.slug}"
    predicted = None
    if existing is not None and existing.exists() and not reencode:
        if committed_recipe != recipe(case):
            raise RuntimeError(
                f"{name}: the recipe changed since the stream was made: use --reencode {case.slug}"
            )
        data = existing.read_bytes()
    else:
        data, predicted = encode_case(case)
    codec = read_codec(data)
    if write_stream(codec) != data:
        raise RuntimeError(f"{name}: the stream does not round-trip through read_codec")
    planes = im.simulate_decode(codec)
    if predicted is not None and any(
        not np.array_equal(a, b) for a, b in zip(planes, predicted, strict=True)
    ):
        raise RuntimeError(f"{name}: the encoder's own prediction differs from the simulation")
    return _valid_entry(name, case.description, "encoder", recipe(case), data, codec, planes)


def build_invalid(
    case: InvalidCase | GapInvalidCase, number: int, bases: dict[str, bytes]
) -> Built:
    name = f"{number:03d}-{case.slug}"
    data, how = case_invalid_stream(case, bases[case.base]), case_recipe(case)
    entry = {
        "stream": f"{name}.cool",
        "description": f"Invalid: {case.description} Made from {case.base}.",
        "origin": "invalid",
        "recipe": how,
        "bytes": len(data),
        "sha256": None,
        "expected": None,
        "reject": {"rule": case.rule, "error": case.error},
    }
    return Built(name, data, entry, None)


def _existing_streams(directory: Path) -> dict[str, tuple[Path, str | None]]:
    """slug -> (path, committed recipe) of the streams already in the suite."""
    try:
        entries = json.loads((directory / "manifest.json").read_text())["streams"]
        recipes = {entry["stream"]: entry.get("recipe") for entry in entries}
    except (OSError, ValueError, KeyError):
        recipes = {}
    found = {}
    for path in sorted((directory / "streams").glob("*.cool")):
        found[path.stem.split("-", 1)[1]] = (path, recipes.get(path.name))
    return found


def build_suite(
    directory: Path, reencode: Iterable[str] = (), encoder: bool = True, log=print
) -> list[Built]:
    """Every stream of the suite, in manifest order. `reencode`: slugs of the encoder-made
    streams to encode again although they exist ("all" for every one).

    Version 1: 001- generator (gap cases numbered from 050 by their own `number`), 101-
    encoder, 201- invalid. Version 2 (spec/bitstream-v2.md): 301-, 351-, 371-.
    """
    reencode = set(reencode)
    existing = _existing_streams(directory)
    built: list[Built] = []

    def timed(make, *args) -> None:
        start = time.perf_counter()
        built.append(make(*args))
        seconds = time.perf_counter() - start
        log(f"  {built[-1].name}: {len(built[-1].data)} bytes ({seconds:.1f} s)")

    def generators(cases, number: int) -> None:
        for case in cases:
            number = getattr(case, "number", number)
            timed(build_generator, case, number)
            number += 1

    def encoders(cases, number: int) -> None:
        for case in cases:
            path, recipe = existing.get(case.slug, (None, None))
            if not encoder and path is None:
                log(f"  {case.slug}: skipped (no committed stream and --no-encoder)")
                continue
            again = "all" in reencode or case.slug in reencode
            timed(build_encoder, case, number, path, recipe, again)
            number += 1

    def invalids(cases, first: int) -> None:
        bases = {b.name.split("-", 1)[1]: b.data for b in built}
        for number, case in enumerate(cases, start=first):
            built.append(build_invalid(case, number, bases))

    generators(V1_GENERATOR_CASES, 1)
    encoders(ENCODER_CASES, 101)
    invalids(V1_INVALID_CASES, 201)
    generators(V2_GENERATOR_CASES, 301)
    encoders(V2_ENCODER_CASES, 351)
    invalids(V2_INVALID_CASES, 371)
    return built


def check_with_reference(built: list[Built]) -> list[str]:
    """Problems found by decoding every stream with the reference decoder (empty: none)."""
    import coolchic_ref

    problems = []
    for item in built:
        reject = item.entry.get("reject")
        try:
            image = coolchic_ref.decode(item.data)
        except coolchic_ref.StreamError as error:
            if reject is None:
                problems.append(f"{item.name}: the reference decoder rejects it: {error}")
            elif reject["error"] not in str(error):
                problems.append(f"{item.name}: rejected for another reason: {error}")
            continue
        if reject is not None:
            problems.append(f"{item.name}: the reference decoder does not reject it")
        elif image.raw_bytes() != item.raw:
            problems.append(f"{item.name}: the reference decoder's samples differ")
    return problems


def missing_features(built: list[Built]) -> set[str]:
    covered = set()
    for item in built:
        covered |= set(item.entry.get("features", ()))
    return REQUIRED_FEATURES - covered


def manifest_text(built: list[Built], reason: str) -> str:
    manifest = {
        "suite": "coolchic-ref conformance suite",
        "bitstream_version": 1,  # of streams 001-299; 301-399 are version 2 (byte 4)
        "manifest_format": MANIFEST_FORMAT,
        "generated_by": "tools/make_conformance.py",
        "reason": reason,
        "streams": [item.entry for item in built],
    }
    return json.dumps(manifest, indent=2) + "\n"


def write_suite(built: list[Built], directory: Path, reason: str) -> None:
    """Replace the suite in `directory`: streams/, expected/, manifest.json."""
    streams, expected = directory / "streams", directory / "expected"
    streams.mkdir(parents=True, exist_ok=True)
    expected.mkdir(parents=True, exist_ok=True)
    keep_streams = {item.entry["stream"] for item in built}
    keep_expected = {item.entry["expected"] for item in built if item.entry["expected"]}
    for path in streams.glob("*.cool"):
        if path.name not in keep_streams:
            path.unlink()
    for path in expected.glob("*.raw.gz"):
        if path.name not in keep_expected:
            path.unlink()
    for item in built:
        (streams / item.entry["stream"]).write_bytes(item.data)
        if item.raw is not None:
            # mtime 0 and no file name: the .gz depends only on the samples (and zlib).
            compressed = gzip.compress(item.raw, compresslevel=9, mtime=0)
            (expected / item.entry["expected"]).write_bytes(compressed)
    (directory / "manifest.json").write_text(manifest_text(built, reason))


def compare_with_committed(built: list[Built], directory: Path) -> list[str]:
    """Differences between the rebuilt suite and the committed one."""
    differences = []
    try:
        committed = json.loads((directory / "manifest.json").read_text())["streams"]
    except (OSError, ValueError, KeyError) as error:
        return [f"cannot read the committed manifest: {error}"]
    by_stream = {entry["stream"]: entry for entry in committed}
    for item in built:
        old = by_stream.pop(item.entry["stream"], None)
        if old is None:
            differences.append(f"{item.name}: not in the committed suite")
            continue
        path = directory / "streams" / item.entry["stream"]
        if not path.exists() or path.read_bytes() != item.data:
            differences.append(f"{item.name}: stream bytes differ")
        if old != item.entry:
            keys = sorted(k for k in set(old) | set(item.entry) if old.get(k) != item.entry.get(k))
            differences.append(f"{item.name}: manifest entry differs in {', '.join(keys)}")
    differences += [f"{name}: in the committed suite only" for name in by_stream]
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.make_conformance", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=SUITE, help="suite directory")
    parser.add_argument("--reason", help="why the suite is regenerated (recorded)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="rebuild in memory and compare with the committed suite",
    )
    parser.add_argument(
        "--reencode",
        nargs="+",
        default=[],
        metavar="SLUG",
        help="re-encode these photographs (slugs, or 'all') although their streams exist",
    )
    parser.add_argument(
        "--no-encoder", action="store_true", help="leave out encoder-made streams not committed yet"
    )
    args = parser.parse_args(argv)
    if not args.check and not args.reason:
        parser.error("--reason is required: say why the committed suite changes")

    print("building the suite:")
    built = build_suite(args.out, reencode=args.reencode, encoder=not args.no_encoder)
    problems = check_with_reference(built)
    lost = missing_features(built)
    if lost:
        problems.append(f"no stream exercises: {', '.join(sorted(lost))}")
    for item in built:
        changed, tried = item.sensitivity
        if tried and not changed:
            problems.append(f"{item.name}: its samples do not depend on its latents")
    valid = sum(item.raw is not None for item in built)
    print(f"{len(built)} streams ({valid} valid, {len(built) - valid} to reject)")
    if problems:
        print("refusing to write the suite:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    if args.check:
        differences = compare_with_committed(built, args.out)
        for difference in differences:
            print(f"  {difference}")
        print("the committed suite is up to date" if not differences else "the suite differs")
        return 1 if differences else 0
    write_suite(built, args.out, args.reason)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
