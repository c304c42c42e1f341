"""Painting the embedded dataset's objects: the palette, an object placed and posed on a canvas,
painted plain with lighting and a soft drop shadow, the backdrop and the sensor noise; and the
one-object images of classify/ and fewshot/ drawn with them."""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .shapes import CLASSES, HELDOUT_CLASSES, SHAPES
from .spec import DEFAULT_SPEC, EmbeddedSpec, image_rng

MIN_CONTRAST = 0.45  # RGB distance an object's colour keeps from the backdrop under it


def _random_colour(rng: np.random.Generator, avoid: np.ndarray | None = None) -> np.ndarray:
    """A random RGB colour in [0, 1], at a visible distance from `avoid` when given."""
    for _ in range(20):
        rgb = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.25, 1.0), rng.uniform(0.3, 1.0)))
        if avoid is None or np.linalg.norm(rgb - avoid) > MIN_CONTRAST:
            break
    return rgb


# The one-object images' colours (hue 0, 0.33, 0.6 at saturation 0.7, value 0.8, and mid grey): any two
# differ by more than MIN_CONTRAST.
PALETTE = tuple(np.array(colorsys.hsv_to_rgb(h, 0.7, 0.8)) for h in (0.0, 0.33, 0.6)) + (np.full(3, 0.5),)


# The held-out parts' (object, backdrop) colours: green on grey.
HELDOUT_COLOURS = (PALETTE[1], PALETTE[3])


def _palette_colour(rng: np.random.Generator, avoid: np.ndarray | None = None,
                    palette: tuple[np.ndarray, ...] = PALETTE) -> np.ndarray:
    """A colour of `palette`, other than the one nearest `avoid` when given."""
    choices = [c for c in palette if avoid is None or np.linalg.norm(c - avoid) > MIN_CONTRAST] or list(palette)
    return choices[int(rng.integers(len(choices)))]


@dataclass
class Placement:
    """One object's pose on the canvas and its rendered coverage."""

    name: str
    u: np.ndarray  # object coordinates of every pixel
    v: np.ndarray
    sdf_px: np.ndarray  # signed distance in pixels
    alpha: np.ndarray  # anti-aliased coverage in [0, 1]


def place(name: str, size: int, cx: float, cy: float, radius: float, angle: float, aspect: float) -> Placement:
    """Shape `name` on a `size`-px square canvas: centred at (cx, cy), `radius` px, turned by `angle`
    radians and stretched by `aspect`."""
    centres = np.arange(size, dtype=np.float32) + np.float32(0.5)  # pixel centres, float32 for speed
    dx, dy = centres[None, :] - np.float32(cx), centres[:, None] - np.float32(cy)
    c, s = np.float32(np.cos(angle) / (radius * aspect)), np.float32(np.sin(angle) / (radius * aspect))
    u = dx * c + dy * s
    c, s = np.float32(np.cos(angle) * aspect / radius), np.float32(np.sin(angle) * aspect / radius)
    v = dy * c - dx * s
    sdf_px = SHAPES[name](u, v) * np.float32(radius)
    return Placement(name, u, v, sdf_px, np.clip(np.float32(0.5) - sdf_px, 0.0, 1.0))


def _texture(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Format 1's texture: a mixing weight in [0, 1] between two colours, moving with the object's pose.
    Only drawn now, to keep the random streams (`paint`)."""
    kind = int(rng.integers(5))
    f, phase = rng.uniform(5.0, 12.0), rng.uniform(0, 2 * np.pi)
    if kind == 0:  # solid
        return np.zeros_like(u)
    if kind == 1:  # stripes
        a = rng.uniform(0, np.pi)
        return 0.5 + 0.5 * np.sin(f * (u * np.cos(a) + v * np.sin(a)) + phase)
    if kind == 2:  # checks
        return ((np.floor(u * f / np.pi) + np.floor(v * f / np.pi)) % 2).astype(np.float32)
    if kind == 3:  # dots
        return (np.sin(f * u + phase) * np.sin(f * v) > 0.35).astype(np.float32)
    coarse = Image.fromarray((rng.random((5, 5)) * 255).astype(np.uint8))  # blotches
    return np.asarray(coarse.resize(u.shape[::-1], Image.BICUBIC), dtype=np.float32) / np.float32(255.0)


def _shifted(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`a` moved by (dy, dx) pixels, zero-filled (np.roll would wrap around)."""
    out = np.zeros_like(a)
    h, w = a.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = a[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def paint(rng: np.random.Generator, canvas: np.ndarray, p: Placement, colour: Callable[..., np.ndarray]) -> None:
    """Composite one plain-coloured, lit object with its drop shadow onto `canvas` in place.

    `colour(rng, avoid=...)` draws the object's colour."""
    size = canvas.shape[0]
    shift = rng.integers(1, max(2, size // 24) + 1, size=2) * rng.choice([-1, 1], size=2)
    # Work only in the window the object and its shadow can reach (scenes are mostly background).
    reach = p.sdf_px < 1.5
    rows, cols = np.flatnonzero(reach.any(axis=1)), np.flatnonzero(reach.any(axis=0))
    pad = int(np.abs(shift).max()) + 1
    win = (slice(max(rows[0] - pad, 0), rows[-1] + pad + 1), slice(max(cols[0] - pad, 0), cols[-1] + pad + 1))
    area, u, v, sdf_px, alpha = canvas[win], p.u[win], p.v[win], p.sdf_px[win], p.alpha[win]
    # Soft drop shadow: a blurrier copy of the shape, shifted away from the light.
    shadow = _shifted(np.clip(0.5 - sdf_px / 3.0, 0.0, 1.0), int(shift[0]), int(shift[1]))
    area *= 1.0 - 0.35 * shadow[..., None]
    under = area.reshape(-1, 3).mean(axis=0)
    c1 = colour(rng, avoid=under).astype(np.float32)
    # Format 1 textured its scenes with a second colour here; drawing them still keeps every image's
    # random stream, and so its pixels, as format 1 drew the one-object images.
    _random_colour(rng), _texture(rng, u, v), rng.uniform(0.3, 0.9)
    light = rng.normal(size=2)
    light = 0.25 * light / (np.linalg.norm(light) + 1e-9)
    shade = np.clip(1.0 + u * float(light[0]) + v * float(light[1]), 0.6, 1.3)
    obj = c1 * shade[..., None]
    a = alpha[..., None]
    area *= 1.0 - a
    area += a * obj


def finish(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Sensor noise on the float canvas, then the uint8 image."""
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(rng.uniform(0.005, 0.03))  # sensor noise
    return (np.clip(canvas, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def plain_background(rng: np.random.Generator, size: int, palette: tuple[np.ndarray, ...] = PALETTE) -> np.ndarray:
    """A plain backdrop: one colour of `palette` under a gentle linear gradient."""
    base = _palette_colour(rng, palette=palette).astype(np.float32)
    tilt = rng.normal(size=2)
    tilt = (0.15 * tilt / (np.linalg.norm(tilt) + 1e-9)).astype(np.float32)
    ramp = np.arange(size, dtype=np.float32) / np.float32(size) - np.float32(0.5)
    field = 1.0 + ramp[None, :] * tilt[0] + ramp[:, None] * tilt[1]
    return np.clip(base * field[..., None], 0.0, 1.0).astype(np.float32)


def _render_single(rng: np.random.Generator, name: str, size: int, heldout: bool = False) -> np.ndarray:
    """One large, roughly upright, plain-coloured object near the centre of a plain backdrop
    (`heldout`: in HELDOUT_COLOURS, else in any two palette colours).

    Deliberately easy: a resnet18 has to learn shape from a few hundred CPU steps
    (`hexa demo`), so pose varies by +-26 degrees, not a full turn, and there is no clutter or texture.
    """
    canvas = plain_background(rng, size, (HELDOUT_COLOURS[1],) if heldout else PALETTE)
    cx, cy = size / 2 + rng.uniform(-0.06, 0.06, 2) * size
    p = place(name, size, cx, cy, radius=rng.uniform(0.32, 0.42) * size,
               angle=rng.uniform(-0.45, 0.45), aspect=rng.uniform(0.9, 1.1))
    paint(rng, canvas, p, colour=heldout_colour if heldout else _palette_colour)
    return finish(rng, canvas)


def heldout_colour(rng: np.random.Generator, avoid: np.ndarray | None = None) -> np.ndarray:
    """The held-out parts' object colour, drawn through the palette so the random stream moves as before."""
    return _palette_colour(rng, palette=(HELDOUT_COLOURS[0],))


def render_classify_image(split: str, class_index: int, index: int, spec: EmbeddedSpec = DEFAULT_SPEC) -> np.ndarray:
    """The uint8 (H, W, 3) image `classify/<split>/<CLASSES[class_index]>/<index>.png` of a spec."""
    rng = image_rng(spec.seed, split, class_index, index)
    return _render_single(rng, CLASSES[class_index], spec.image_size)


def render_fewshot_image(class_index: int, index: int, spec: EmbeddedSpec = DEFAULT_SPEC) -> np.ndarray:
    """The uint8 image `fewshot/<HELDOUT_CLASSES[class_index]>/<index>.png` of a spec."""
    rng = image_rng(spec.seed, "fewshot", class_index, index)
    return _render_single(rng, HELDOUT_CLASSES[class_index], spec.image_size, heldout=True)
