"""Measure conventional codecs (JPEG, WebP, AVIF, JPEG XL, HEVC) per image, in Python.

    python -m tools.anchor_conventional --images ../shared/data/kodak/kodim0{1,2,3,4}.png \\
        --crop 256 --results tools/results/kodak-crops256-conventional.tsv [--jobs 2] \\
        [--codecs jpeg,webp,avif,jxl,hevc] [--settings avif=10,30,50] [--write-crops DIR]

Each codec runs in this process through a Python package, so RD claims on any picture
can be checked without a locally built program: JPEG, WebP, AVIF and JPEG XL through
`imagecodecs`, HEVC through `pillow-heif` (libheif with x265). Install them with
`pip install ".[anchors]"` (tools/install.sh does). A codec that the installed
packages lack is skipped with a message.

Settings (the `setting` column), all 8-bit, one thread per encode:
  JPEG444-measured  libjpeg-turbo quality, 4:4:4, optimized Huffman tables (JFIF)
  WebP-measured     libwebp lossy quality, method 6 (WebP lossy is always 4:2:0)
  AVIF444-measured  libavif quality 0-100 with libaom, speed 1, YUV 4:4:4, BT.601
                    full range (libavif tunes libaom for SSIM: imagecodecs does not
                    pass codec options such as tune=psnr)
  JXL-measured      libjxl distance, effort 7
  HEVC444-measured  x265 QP (constant QP) in HEIF, 4:4:4, BT.601 full range, preset
                    veryslow with PSNR tuning (psy-rd, psy-rdoq and AQ off)

bpp is the encoded file size (the whole file: JFIF, RIFF, ISOBMFF/HEIF container or
JXL codestream) x 8 / pixels; psnr_rgb is the RGB PSNR (MSE over all samples, peak
255) of the decoded samples against the original. Rows are in the format of
`kodak-conventional.tsv` (codec, setting, image, bytes, bpp, psnr_rgb) that
`tools/bd_rate.py --extra-anchors` reads; the run is resumable (rows already in the
file are skipped) and each row is written durably.

--crop N codes the N x N centre of each picture (rows name it <stem>-cropN, the name
rd_eval.py gives a PNG of that crop written by --write-crops DIR).
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.rd_eval import ResultsWriter, center_crop, psnr, read_image, read_results

COLUMNS = ("codec", "setting", "image", "bytes", "bpp", "psnr_rgb")


@dataclass(frozen=True)
class Codec:
    """One codec configuration: `encode(rgb, setting) -> bytes`, `decode(bytes) -> rgb`."""

    key: str  # short name used on the command line
    name: str  # codec column of the results
    settings: tuple[str, ...]  # default settings, lowest quality first
    encode: Callable[[np.ndarray, str], bytes]
    decode: Callable[[bytes], np.ndarray]
    available: Callable[[], str | None]  # None when usable, else why not


def _imagecodecs_missing(attribute: str) -> str | None:
    try:
        import imagecodecs
    except ImportError:
        return "imagecodecs is not installed (pip install '.[anchors]')"
    codec = getattr(imagecodecs, attribute, None)
    if codec is None or not getattr(codec, "available", False):
        return f"the installed imagecodecs {imagecodecs.__version__} has no {attribute} codec"
    return None


def _encode_jpeg(rgb: np.ndarray, setting: str) -> bytes:
    import imagecodecs

    return bytes(
        imagecodecs.jpeg8_encode(rgb, level=int(setting), subsampling="444", optimize=True)
    )


def _decode_jpeg(data: bytes) -> np.ndarray:
    import imagecodecs

    return imagecodecs.jpeg8_decode(data)


def _encode_webp(rgb: np.ndarray, setting: str) -> bytes:
    import imagecodecs

    # lossless=False must be explicit: imagecodecs codes losslessly by default.
    return bytes(
        imagecodecs.webp_encode(rgb, level=float(setting), lossless=False, method=6, numthreads=0)
    )


def _decode_webp(data: bytes) -> np.ndarray:
    import imagecodecs

    return imagecodecs.webp_decode(data)


def _encode_avif(rgb: np.ndarray, setting: str) -> bytes:
    import imagecodecs

    return bytes(
        imagecodecs.avif_encode(
            rgb, level=int(setting), speed=1, pixelformat="444", codec="aom", numthreads=1
        )
    )


def _decode_avif(data: bytes) -> np.ndarray:
    import imagecodecs

    return imagecodecs.avif_decode(data, numthreads=1)


def _avif_missing() -> str | None:
    missing = _imagecodecs_missing("AVIF")
    if missing is not None:
        return missing
    try:  # libavif may be built without libaom's encoder
        _encode_avif(np.zeros((16, 16, 3), np.uint8), "50")
    except Exception as error:  # noqa: BLE001 - any failure means: not usable here
        return f"imagecodecs' libavif cannot encode with libaom ({error})"
    return None


def _encode_jxl(rgb: np.ndarray, setting: str) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.jpegxl_encode(rgb, distance=float(setting), effort=7, numthreads=1))


def _decode_jxl(data: bytes) -> np.ndarray:
    import imagecodecs

    return imagecodecs.jpegxl_decode(data, numthreads=1)


HEVC_PARAMS = {
    "preset": "veryslow",
    "tune": "psnr",
    # libheif sets psy-rd, psy-rdoq and aq-mode after the tuning: undo that for PSNR.
    "x265:psy-rd": "0",
    "x265:psy-rdoq": "0",
    "x265:aq-mode": "0",
    "x265:pools": "1",
    "x265:frame-threads": "1",
}


def _encode_hevc(rgb: np.ndarray, setting: str) -> bytes:
    import pillow_heif

    height, width = rgb.shape[:2]
    heif = pillow_heif.from_bytes(mode="RGB", size=(width, height), data=rgb.tobytes())
    out = io.BytesIO()
    # x265:qp selects constant-QP coding; libheif's `quality` (a CRF) is then unused.
    params = {**HEVC_PARAMS, "x265:qp": str(int(setting))}
    heif.save(out, quality=50, chroma=444, tile_size=0, enc_params=params)
    return out.getvalue()


def _decode_hevc(data: bytes) -> np.ndarray:
    import pillow_heif

    return np.asarray(pillow_heif.open_heif(io.BytesIO(data)))


def _hevc_missing() -> str | None:
    try:
        import pillow_heif
    except ImportError:
        return "pillow-heif is not installed (pip install '.[anchors]')"
    encoders = pillow_heif.libheif_info().get("encoders", {})
    if "x265" not in encoders:
        return f"pillow-heif {pillow_heif.__version__}'s libheif has no x265 encoder"
    return None


CODECS: dict[str, Codec] = {
    codec.key: codec
    for codec in (
        Codec(
            "jpeg",
            "JPEG444-measured",
            ("5", "10", "20", "30", "40", "50", "60", "70", "80", "90", "95"),
            _encode_jpeg,
            _decode_jpeg,
            lambda: _imagecodecs_missing("JPEG8"),
        ),
        Codec(
            "webp",
            "WebP-measured",
            ("0", "10", "20", "30", "45", "60", "70", "80", "90", "95"),
            _encode_webp,
            _decode_webp,
            lambda: _imagecodecs_missing("WEBP"),
        ),
        Codec(
            "avif",
            "AVIF444-measured",
            ("0", "5", "10", "15", "20", "25", "30", "40", "50", "60", "70", "80"),
            _encode_avif,
            _decode_avif,
            _avif_missing,
        ),
        Codec(
            "jxl",
            "JXL-measured",
            ("25", "12", "7", "4", "2.5", "1.5", "1", "0.8", "0.6", "0.4"),
            _encode_jxl,
            _decode_jxl,
            lambda: _imagecodecs_missing("JPEGXL"),
        ),
        Codec(
            "hevc",
            "HEVC444-measured",
            ("51", "47", "43", "39", "35", "31", "27", "23", "20"),
            _encode_hevc,
            _decode_hevc,
            _hevc_missing,
        ),
    )
}


def parse_settings(items: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """`['avif=10,30', 'jpeg=50']` -> {'avif': ('10', '30'), 'jpeg': ('50',)}."""
    chosen: dict[str, tuple[str, ...]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in CODECS:
            raise ValueError(
                f"--settings {item!r}: expected CODEC=V1,V2,... with CODEC one of "
                f"{', '.join(CODECS)}"
            )
        settings = tuple(v.strip() for v in values.split(",") if v.strip())
        for value in settings:
            try:
                float(value)
            except ValueError:
                raise ValueError(f"--settings {item!r}: {value!r} is not a number") from None
        if not settings:
            raise ValueError(f"--settings {item!r}: no value")
        chosen[key] = settings
    return chosen


def load_rgb(path: Path, crop: int | None) -> tuple[str, np.ndarray]:
    """(image name, 8-bit RGB array) of a picture, centre-cropped to crop x crop if asked."""
    array = read_image(path)
    if array.dtype != np.uint8 or array.shape[2] not in (3, 4):
        raise ValueError(
            f"{path}: 8-bit RGB pictures only (got {array.dtype}, {array.shape[2]} channel(s))"
        )
    array = np.ascontiguousarray(array[:, :, :3])
    if crop is None:
        return path.stem, array
    return f"{path.stem}-crop{crop}", center_crop(array, crop)


def measure(codec: Codec, setting: str, name: str, rgb: np.ndarray) -> dict[str, object]:
    """Encode `rgb` with `codec` at `setting`, decode it, and return one result row."""
    data = codec.encode(rgb, setting)
    decoded = np.asarray(codec.decode(data))
    if decoded.ndim == 3 and decoded.shape[2] == 4:
        decoded = decoded[:, :, :3]
    if decoded.dtype != np.uint8:
        raise ValueError(f"{codec.name} decoded {decoded.dtype} samples, expected uint8")
    height, width = rgb.shape[:2]
    return {
        "codec": codec.name,
        "setting": setting,
        "image": name,
        "bytes": len(data),
        "bpp": f"{len(data) * 8 / (width * height):.6f}",
        "psnr_rgb": f"{psnr(rgb, decoded):.4f}",
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--images", type=Path, nargs="+", required=True, help="PNG pictures")
    parser.add_argument("--results", type=Path, required=True, help="TSV to append rows to")
    parser.add_argument(
        "--codecs",
        default=",".join(CODECS),
        help=f"comma-separated codecs (default: {','.join(CODECS)})",
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        default=[],
        metavar="CODEC=V1,V2",
        help="settings of a codec instead of its defaults, e.g. avif=10,30,50 hevc=37",
    )
    parser.add_argument("--crop", type=int, default=None, metavar="N", help="code the N x N centre")
    parser.add_argument(
        "--write-crops",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write the cropped pictures to DIR as <stem>-cropN.png",
    )
    parser.add_argument("--jobs", type=int, default=1, help="encodes at a time (default 1)")
    args = parser.parse_args(argv)
    try:
        settings = parse_settings(args.settings)
        keys = [k.strip().lower() for k in args.codecs.split(",") if k.strip()]
        unknown = [k for k in keys if k not in CODECS]
        if unknown or not keys:
            raise ValueError(
                f"--codecs: unknown codec(s) {', '.join(unknown) or '(none)'}; "
                f"known: {', '.join(CODECS)}"
            )
        if args.crop is not None and args.crop < 16:
            raise ValueError("--crop must be at least 16 (x265's smallest picture)")
        if args.write_crops is not None and args.crop is None:
            raise ValueError("--write-crops needs --crop")
        pictures = [load_rgb(path, args.crop) for path in args.images]
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    names = [name for name, _ in pictures]
    if len(set(names)) != len(names):
        print("error: two images have the same file name (results key on it)", file=sys.stderr)
        return 2
    if args.write_crops is not None:
        import imageio.v3 as iio

        args.write_crops.mkdir(parents=True, exist_ok=True)
        for name, rgb in pictures:
            target = args.write_crops / f"{name}.png"
            tmp = target.with_name(f".{target.name}.tmp.png")
            iio.imwrite(tmp, rgb)
            tmp.replace(target)
        print(f"wrote {len(pictures)} crop(s) to {args.write_crops}")

    codecs = []
    for key in keys:
        missing = CODECS[key].available()
        if missing is not None:
            print(f"skipped {CODECS[key].name}: {missing}", file=sys.stderr)
        else:
            codecs.append(CODECS[key])
    writer = ResultsWriter(args.results, COLUMNS, required=COLUMNS)
    done = {
        (row["codec"], row["setting"], row["image"])
        for row in read_results(args.results, required=COLUMNS)
    }
    todo = [
        (codec, setting, name, rgb)
        for codec in codecs
        for setting in settings.get(codec.key, codec.settings)
        for name, rgb in pictures
        if (codec.name, setting, name) not in done
    ]
    print(f"{len(todo)} encode(s) to run, {len(done)} row(s) already in {args.results}")

    def one(job: tuple[Codec, str, str, np.ndarray]) -> None:
        row = measure(*job)
        writer.append(row)
        print(
            f"{row['codec']} {row['setting']} {row['image']}: {row['bpp']} bpp "
            f"{row['psnr_rgb']} dB",
            flush=True,
        )

    failed = 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for job, future in [(job, pool.submit(one, job)) for job in todo]:
            try:
                future.result()
            except Exception as error:  # noqa: BLE001 - one failed encode must not stop the rest
                failed += 1
                print(f"error: {job[0].name} {job[1]} {job[2]}: {error}", file=sys.stderr)
    return 1 if failed or not codecs else 0


if __name__ == "__main__":
    sys.exit(main())
