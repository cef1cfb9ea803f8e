"""Memory of decoding near-limit images for predictions: automl against the textbook path.

A predict request may send images up to ``AUTOML_LIMIT_MAX_IMAGE_PIXELS`` (40 megapixels)
each. Both sides decode the same files to the same 64x64 RGB array (pixel for pixel the
same: checked), each in a fresh process:

- ``textbook``: Pillow as its documentation composes transparency onto white: the image
  (16-bit gray scaled to 8 bits with ``np.where`` masks) to RGBA, ``alpha_composite`` onto
  a white RGBA image, then to RGB and resized;
- ``automl``: ``automl.data.decode.decode_image`` (byte masks, blending the color
  channels with white by the alpha; the same resize);

and a burst: three threads each decode two such images, then the process's resident
memory is read before and after ``automl.delivery.pixel_budget.release_freed_memory``
(what the API now does once the last large decode ends).

Printed per image kind: the peak resident memory growth of each side (MB) and the ratio
textbook over automl (above 1: automl needs less); then the burst's memory kept and left.

    python benchmarks/bench_decode_memory.py [--side 6324]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from automl.data.decode import Preprocess, fit_image

KINDS = ("gray16-transparent", "rgba")

SIDE_SCRIPT = """
import json, resource, sys
import numpy as np
from PIL import Image
sys.path.insert(0, {benchmarks!r})
from bench_decode_memory import decode_textbook
from automl.data.decode import Preprocess, decode_image

path, side = sys.argv[1], sys.argv[2]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if side == "automl":
    pixels = decode_image(path, Preprocess(64, 64))
else:
    pixels = decode_textbook(path)
peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({{"peak_mb": peak, "sum": int(np.asarray(pixels, np.int64).sum())}}))
"""

BURST_SCRIPT = """
import json, sys, threading
from automl.data.decode import Preprocess, decode_image
from automl.delivery.pixel_budget import release_freed_memory

def resident_mb():
    with open("/proc/self/status") as status:
        return int(next(l for l in status if l.startswith("VmRSS:")).split()[1]) / 1024

together = threading.Barrier(3)

def decode_two():  # side by side, as concurrent requests: each thread has its own arena
    for _ in range(2):
        together.wait()
        decode_image(sys.argv[1], Preprocess(64, 64))

before = resident_mb()
threads = [threading.Thread(target=decode_two) for _ in range(3)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
kept = resident_mb() - before
release_freed_memory()
print(json.dumps({"kept_mb": kept, "left_mb": resident_mb() - before}))
"""


def decode_textbook(path: str) -> np.ndarray:
    """The straightforward decode of ``path`` to a 64x64 RGB ``(C, H, W)`` uint8 array
    (resized as automl resizes: only the conversion differs)."""
    with Image.open(path) as opened:
        image = opened.copy()
    if image.mode.startswith("I"):
        stored = np.asarray(image)
        eight = Image.fromarray((np.clip(stored, 0, 65535).astype(np.uint16) >> 8).astype(np.uint8))
        key = image.info.get("transparency")
        if isinstance(key, int):
            alpha = Image.fromarray(np.where(stored == key, 0, 255).astype(np.uint8))
            eight = Image.merge("LA", (eight, alpha))
        image = eight
    rgba = image.convert("RGBA")
    white = Image.alpha_composite(Image.new("RGBA", rgba.size, (255,) * 4), rgba)
    return fit_image(white.convert("RGB"), Preprocess(64, 64))


def write_image(kind: str, side: int, folder: Path) -> Path:
    """A ``side x side`` image of ``kind``, with transparent and opaque parts."""
    path = folder / f"{kind}.png"
    half = np.zeros((side, side), np.uint16)
    half[:, side // 2 :] = 40_000
    if kind == "gray16-transparent":
        Image.fromarray(half).save(path, transparency=0)
    else:
        rgb = np.stack([(half >> 8).astype(np.uint8)] * 3, axis=-1)
        alpha = np.full((side, side, 1), 128, np.uint8)
        Image.fromarray(np.concatenate([rgb, alpha], axis=-1), "RGBA").save(path)
    return path


def run(script: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Runs ``script`` in a fresh interpreter (in ``env``, default this one's); its one
    line of JSON."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
        env=env,
    )
    return json.loads(done.stdout.splitlines()[-1])


def burst(path: str, env: dict[str, str] | None = None) -> dict:
    """Three threads decode ``path`` twice each, side by side, in a fresh process: the
    memory (MB) it kept after them and what was left after ``release_freed_memory``."""
    return run(BURST_SCRIPT, path, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=6324, help="image side (6324: 40 MP)")
    args = parser.parse_args()
    side_script = SIDE_SCRIPT.format(benchmarks=str(Path(__file__).resolve().parent))
    with tempfile.TemporaryDirectory() as folder:
        print(f"{'image':<20} {'textbook MB':>12} {'automl MB':>10} {'ratio':>6}")
        for kind in KINDS:
            path = str(write_image(kind, args.side, Path(folder)))
            textbook = run(side_script, path, "textbook")
            ours = run(side_script, path, "automl")
            if textbook["sum"] != ours["sum"]:
                raise SystemExit(f"{kind}: the two sides decoded different pixels")
            ratio = textbook["peak_mb"] / ours["peak_mb"]
            print(f"{kind:<20} {textbook['peak_mb']:>12.0f} {ours['peak_mb']:>10.0f} {ratio:>6.2f}")
        after = burst(str(write_image("rgba", args.side, Path(folder))))
        print(
            f"burst of 6 rgba images on 3 threads: {after['kept_mb']:.0f} MB kept, "
            f"{after['left_mb']:.0f} MB after release_freed_memory"
        )


if __name__ == "__main__":
    main()
