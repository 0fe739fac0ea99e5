"""What one upload costs to validate and normalise, by format and pixel count: CPU seconds and peak memory.

    .venv/bin/python bench/image_decode_benchmark.py [--megapixels 4 8 12 16 25 40]

Each case runs ``catalog.imaging.normalise`` (decode, to upright RGB, shrink, encode: all an upload costs)
in a fresh process on a cheap-to-send image of one colour, the shape of a decompression-bomb upload, and
prints the file size, the CPU time and how far the process's peak resident memory rose above where it
was (Linux: read from /proc/self/status). JPEG decodes at reduced scale (``draft``); PNG and WebP
decode every pixel, which is what ``CARSITE_UPLOAD_MAX_DECODED_PIXELS`` bounds.
"""

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CASES = [("PNG", "RGBA"), ("PNG", "RGB"), ("WEBP", "RGBA"), ("JPEG", "RGB")]


def _make(fmt: str, mode: str, side: int, path: Path) -> None:
    from PIL import Image

    options = {"lossless": True} if fmt == "WEBP" else {}
    Image.new(mode, (side, side), (90, 120, 200, 255)[: len(mode)]).save(path, format=fmt, **options)


def _measure(path: Path, side: int) -> dict:
    from PIL import Image

    from catalog.imaging import ImageLimits, normalise

    Image.MAX_IMAGE_PIXELS = None
    data = path.read_bytes()
    limits = ImageLimits(max_bytes=len(data) + 1, max_pixels=side * side, max_decoded_pixels=side * side)
    # Linux: reset the process's peak resident size to its current size, so the peak is this upload's.
    Path("/proc/self/clear_refs").write_text("5")
    resident_before = _status_kb("VmRSS")
    cpu = time.process_time()
    normalise(data, limits, perceptual_hash=False, keep_clean_jpeg=True)
    cpu = time.process_time() - cpu
    return {"bytes": len(data), "cpu_s": cpu, "peak_growth_mb": (_status_kb("VmHWM") - resident_before) / 1024}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, nargs="+", default=[4, 8, 12, 16, 25, 40])
    parser.add_argument("--one", nargs=2, metavar=("PATH", "SIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_measure(Path(args.one[0]), int(args.one[1]))))
        return
    workdir = Path(tempfile.mkdtemp(prefix="carsite-decode-bench-"))
    print(f"{'format':<6} {'mode':<5} {'pixels':>12} {'file':>9} {'CPU s':>6} {'+peak MB':>9}")
    for megapixels in args.megapixels:
        side = int(math.sqrt(megapixels * 1_000_000))
        for fmt, mode in CASES:
            path = workdir / f"{mode}-{side}.{fmt.lower()}"
            _make(fmt, mode, side, path)
            result = subprocess.run(
                [sys.executable, __file__, "--one", str(path), str(side)],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(result.stdout)
            print(
                f"{fmt:<6} {mode:<5} {side * side:>12,} {row['bytes'] / 1024:>7.0f}KB "
                f"{row['cpu_s']:>6.2f} {row['peak_growth_mb']:>9.0f}"
            )
            path.unlink()
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    main()
