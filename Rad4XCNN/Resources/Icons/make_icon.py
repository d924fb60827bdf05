"""Draw the Rad4XCNN icon (128 x 128 PNG): an ultrasound fan with a lesion under a heat map, linked to a
small network graph and a feature table. Run from the repository root; it writes the module's icon and the
extension's top-level copy.

    python Rad4XCNN/Resources/Icons/make_icon.py
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 128
SCALE = 4  # draw large, then shrink: smooth edges without an anti-aliasing library
HERE = Path(__file__).resolve().parent
TARGETS = (HERE / "Rad4XCNN.png", HERE.parents[2] / "Rad4XCNN.png")


def _heat(value: np.ndarray) -> np.ndarray:
    """Black-red-orange-yellow colours of ``value`` in [0, 1] (the module's CAM colour table)."""
    anchors = np.array(
        [[0.0, 0, 0, 0], [0.3, 0.6, 0, 0], [0.6, 1, 0.45, 0], [0.85, 1, 0.9, 0.1], [1, 1, 1, 1]]
    )
    return np.stack([np.interp(value, anchors[:, 0], anchors[:, c]) for c in (1, 2, 3)], axis=-1)


def draw() -> Image.Image:
    n = SIZE * SCALE
    canvas = Image.new("RGBA", (n, n), (0, 0, 0, 0))
    ink = ImageDraw.Draw(canvas)
    # rounded dark-blue tile
    ink.rounded_rectangle(
        [4 * SCALE, 4 * SCALE, n - 4 * SCALE, n - 4 * SCALE], radius=22 * SCALE, fill=(22, 38, 66)
    )

    # ultrasound fan: speckled grey sector opening downwards from the top left
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    apex = (44 * SCALE, 14 * SCALE)
    radius = np.hypot(xx - apex[0], yy - apex[1])
    angle = np.degrees(np.arctan2(xx - apex[0], yy - apex[1]))
    fan = (radius > 10 * SCALE) & (radius < 92 * SCALE) & (np.abs(angle) < 34)
    speckle = np.clip(rng.gamma(2.0, 0.5, (n // 4, n // 4)), 0, 3) / 3
    speckle = np.kron(speckle, np.ones((4, 4)))
    grey = 0.35 + 0.45 * speckle * np.exp(-radius / (120 * SCALE))
    # the lesion: a dark oval, and the CAM over it
    lesion_centre = (44 * SCALE, 62 * SCALE)
    d = ((xx - lesion_centre[0]) / (15 * SCALE)) ** 2 + ((yy - lesion_centre[1]) / (10 * SCALE)) ** 2
    grey = np.where(d < 1, 0.08 + 0.1 * speckle, grey)
    cam = np.exp(-(((xx - 47 * SCALE) / (17 * SCALE)) ** 2 + ((yy - 60 * SCALE) / (13 * SCALE)) ** 2))
    rgb = np.repeat(grey[..., None], 3, axis=2)
    heat = _heat(cam)
    alpha = 0.75 * np.clip(cam * 1.3, 0, 1)[..., None]
    rgb = rgb * (1 - alpha) + heat * alpha
    layer = np.zeros((n, n, 4), np.uint8)
    layer[..., :3] = np.clip(rgb * 255, 0, 255).astype(np.uint8)
    tile = np.asarray(canvas)[..., 3] > 0  # keep the fan inside the rounded tile
    layer[..., 3] = np.where(fan & tile, 255, 0).astype(np.uint8)
    canvas = Image.alpha_composite(canvas, Image.fromarray(layer, "RGBA"))
    ink = ImageDraw.Draw(canvas)

    # a small network: three layers of nodes on the right
    columns = [(88, (36, 56, 76)), (102, (46, 66)), (114, (56,))]
    nodes = [[(x * SCALE, y * SCALE) for y in ys] for x, ys in columns]
    line = (120, 170, 230)
    for a, b in itertools.pairwise(nodes):
        for p in a:
            for q in b:
                ink.line([p, q], fill=line, width=int(1.4 * SCALE))
    ink.line([(60 * SCALE, 60 * SCALE), nodes[0][1]], fill=(255, 190, 60), width=int(2.2 * SCALE))
    for layer_nodes in nodes:
        for x, y in layer_nodes:
            r = 5 * SCALE
            ink.ellipse(
                [x - r, y - r, x + r, y + r], fill=(235, 240, 250), outline=(90, 140, 210), width=SCALE
            )

    # a feature table linked to the deep feature: rows of bars (radiomic features), one highlighted
    top, left = 90 * SCALE, 70 * SCALE
    widths = (40, 28, 34)
    for i, w in enumerate(widths):
        y = top + i * 9 * SCALE
        colour = (255, 190, 60) if i == 0 else (150, 170, 200)
        ink.rounded_rectangle([left, y, left + w * SCALE, y + 5 * SCALE], radius=2 * SCALE, fill=colour)
    ink.line([nodes[2][0], (left + 40 * SCALE, top + 2 * SCALE)], fill=(255, 190, 60), width=int(2.2 * SCALE))

    icon = canvas.resize((SIZE, SIZE), Image.LANCZOS)
    return icon.filter(ImageFilter.UnsharpMask(radius=1, percent=40, threshold=2))


def main() -> None:
    icon = draw()
    for target in TARGETS:
        icon.save(target, optimize=True)
        print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
