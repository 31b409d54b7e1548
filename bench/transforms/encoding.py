"""What a JPEG's encoding options cost and save, per output size: `python -m bench.transforms.encoding`.

For each size class (the long side of the output, from the bench's 12 MP and 2.5 MP photos, made
once by the engine's own pipeline up to the encode), libvips encodes the same pixels at q80 three
ways: baseline with the standard Huffman tables, baseline with optimised Huffman tables, and
progressive (which libjpeg always optimises). It prints the CPU time of each encode (the median of
`ROUNDS` timed loops, one thread) and the bytes, and each option's bytes saved per extra
millisecond: what `transform.engine` chooses by (docs/transforms.md).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Final

import pyvips

from ..sources import source_bytes

ROUNDS: Final = 5
SIZES: Final = (150, 300, 600, 800, 1200, 1600, 2400)  # the long side of the output, pixels
QUALITY: Final = 80
OPTIONS: Final[dict[str, tuple[bool, bool]]] = {  # name -> (optimize_coding, interlace)
    "baseline": (False, False),
    "optimised": (True, False),
    "progressive": (True, True),
}


def cpu_ms(action: Callable[[], bytes], seconds: float = 0.3) -> tuple[float, int]:
    """The median CPU milliseconds of one `action()`, and its output's size."""
    size = len(action())
    rounds: list[float] = []
    for _ in range(ROUNDS):
        count, started = 0, time.process_time()
        while time.process_time() - started < seconds:
            action()
            count += 1
        rounds.append((time.process_time() - started) * 1000 / count)
    return statistics.median(rounds), size


def pixels(source: str, long_side: int) -> pyvips.Image:
    """The photo at `long_side` pixels, in memory (decoded and resized once)."""
    image = pyvips.Image.thumbnail_buffer(source_bytes(source), long_side, height=long_side)
    return image.copy_memory()


def encoder(image: pyvips.Image, options: tuple[bool, bool]) -> Callable[[], bytes]:
    """One JPEG encode of `image` at `QUALITY` with `options`, no metadata."""

    def encode() -> bytes:
        optimise, interlace = options
        body = image.jpegsave_buffer(Q=QUALITY, keep=0, optimize_coding=optimise, interlace=interlace)
        assert isinstance(body, bytes)
        return body

    return encode


def main() -> int:
    pyvips.voperation.concurrency_set(1)
    print("| source | output | option | CPU ms | bytes | bytes saved vs baseline | saved per extra ms |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for source in ("photo-12mp.jpg", "photo-2.5mp.jpg"):
        for long_side in SIZES:
            image = pixels(source, long_side)
            figures = {name: cpu_ms(encoder(image, options)) for name, options in OPTIONS.items()}
            base_ms, base_bytes = figures["baseline"]
            for name, (ms, size) in figures.items():
                saved = base_bytes - size
                extra = ms - base_ms
                per_ms = f"{saved / extra:,.0f}" if name != "baseline" and extra > 0 else "-"
                print(
                    f"| {source} | {image.width}x{image.height} | {name} | {ms:.2f} | {size:,} | "
                    f"{saved / base_bytes:+.1%} | {per_ms} |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
