"""The embedded dataset: small synthetic images so that every hexa command runs out of the box.

What it is: a deterministic, seeded generator of 64x64 pictures of ten procedural object classes
(arrow, crescent, cross, disc, dumbbell, hexagon, ring, square, star, triangle). Each classification
image shows one large object near the centre, roughly upright (rotated by at most 26 degrees, slightly
stretched, about 0.6-0.8 of the image across), in a plain colour with lighting and a soft drop shadow,
on a plain backdrop of another colour under a gentle gradient, with sensor noise. Both colours come
from a palette of four (`PALETTE`), independently of the class, so only shape tells the classes apart.
The palette is small on purpose: with freely drawn colours, the pair (object, backdrop) named each image
almost uniquely and survived colour jitter (a hue shift moves both), so MoCo told instances apart by
colour and learnt no shape (kNN stayed at chance); with twelve pairs over 2000 images, instance
discrimination has to use shape. These images are deliberately easy (no clutter, no texture, little
pose variation) because `hexa demo` trains a resnet18 for only a few hundred CPU steps: on the earlier
version's images (textures, full turns, background clutter) even a supervised resnet18 stayed near
chance after that many steps; on these, one reaches about 75% in 200 steps.
Ten more shapes (`HELDOUT_CLASSES`), drawn the same way, appear only in the few-shot split.
Multi-object 128x128 scenes hold 1-4 objects of the ten classes, smaller and anywhere, some tiny or occluded
and flagged `difficult`, some cut by the border and flagged `truncated`; they come with boxes in the real
VOCdevkit/VOC2007 layout and as COCO instances JSON
(with RLE masks), so the detection and VOC07 readers run on real formats.

The held-out parts (the few-shot shapes and the scenes) are drawn in one colour pair, `HELDOUT_COLOURS`
(green on grey, a pair the training images also use), plain and near-upright like the training images.
They test what is held out, new shapes and new layouts, and not colour invariance. A trunk pre-trained
for the demo's few hundred steps has colour-first features: the palette's twelve pairs survive colour
jitter, so kNN finds same-colour neighbours among 200 images a class, but with 5 shots a query's shots
rarely share its colours. When these parts were drawn in all twelve pairs (and the scenes textured, in
any colour, at any rotation, on clutter: format 1), every trunk, pre-trained or untrained, was at chance
on them (5-way 5-shot 22-24%; low-shot SVM mAP 25-28, chance about 25).

What it is not: a benchmark. It is a smoke-test and teaching dataset: numbers measured on it show
that a pipeline works and let two methods be compared at toy scale; they do not predict ImageNet,
VOC or COCO numbers, and nobody should quote them as such.

Layout under `embedded_root()` (`$HEXA_DATA_HOME/embedded-v2`, default `~/.cache/hexa_zoo/data`):

    classify/{train,val,test}/<class>/<nnnn>.png   64x64 RGB, 200/40/40 per class (ImageFolder)
    fewshot/<heldout_class>/<nnnn>.png             64x64 RGB, 40 per held-out class
    VOCdevkit/VOC2007/Annotations/<id>.xml          VOC XML, boxes 1-based inclusive
    VOCdevkit/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt and <cls>_<split>.txt (1/-1/0)
    VOCdevkit/VOC2007/JPEGImages/<id>.jpg           128x128 scenes: 400 trainval, 200 test
    coco/annotations/instances_{train,val}.json     the same scenes (train = trainval, val = test)
    coco/{train,val}/<id>.jpg
    manifest.json                                   version, seed, counts, sha256 fingerprint

Generation takes a few seconds on one core (numpy signed-distance rendering, no per-pixel Python
loops) and happens once: the folder is built in a temporary directory and renamed into place, so a
crash leaves nothing half-written and two processes racing end up sharing one complete copy.
Every image has its own random stream seeded by (seed, part, class, index), so any single image can
be re-rendered on its own (`render_classify_image`, `render_scene`) and compared with the files.
"""

from __future__ import annotations

import colorsys
import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .errors import DataError
from .fileio import atomic_write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: the held-out parts in one colour pair, plain scenes (module docstring)
FOLDER_NAME = f"embedded-v{FORMAT_VERSION}"


# --------------------------------------------------------------------------------------------
# Shapes as signed distance functions of object coordinates (u, v): negative inside, in units of
# the object's radius. Unions are minima, intersections maxima, differences max(a, -b).

def _circle(u, v, r, cu=0.0, cv=0.0):
    return np.hypot(u - cu, v - cv) - r


def _box(u, v, hu, hv, cu=0.0, cv=0.0):
    qu, qv = np.abs(u - cu) - hu, np.abs(v - cv) - hv
    outside = np.hypot(np.maximum(qu, 0.0), np.maximum(qv, 0.0))
    return outside + np.minimum(np.maximum(qu, qv), 0.0)


def _convex(u, v, vertices):
    """Distance-like field of a convex polygon (vertices counter-clockwise): max of edge planes."""
    pts = np.asarray(vertices, dtype=np.float64)
    edges = np.roll(pts, -1, axis=0) - pts
    normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    # Orient normals outwards whatever the vertex order.
    centre = pts.mean(axis=0)
    offsets = (normals * pts).sum(axis=1)
    flip = (normals @ centre - offsets) > 0
    normals[flip] *= -1
    offsets[flip] *= -1
    normals, offsets = normals.astype(u.dtype), offsets.astype(u.dtype)
    d = normals[:, 0, None, None] * u + normals[:, 1, None, None] * v - offsets[:, None, None]
    return d.max(axis=0)


def _regular(n, r, phase=0.0):
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _star(u, v, points, r_out, r_in):
    """A star as the union of one convex kite per point (centre, inner, tip, inner)."""
    step = 2 * np.pi / points
    d = None
    for k in range(points):
        a = k * step
        kite = [(0.0, 0.0),
                (r_in * np.cos(a - step / 2), r_in * np.sin(a - step / 2)),
                (r_out * np.cos(a), r_out * np.sin(a)),
                (r_in * np.cos(a + step / 2), r_in * np.sin(a + step / 2))]
        dk = _convex(u, v, kite)
        d = dk if d is None else np.minimum(d, dk)
    return d


SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    # The ten classes of classify/ and of the detection scenes.
    "disc": lambda u, v: _circle(u, v, 0.9),
    "square": lambda u, v: _box(u, v, 0.72, 0.72),
    "triangle": lambda u, v: _convex(u, v, _regular(3, 1.0, -np.pi / 2) + (0, 0.2)),
    "star": lambda u, v: _star(u, v, 5, 1.0, 0.42),
    "cross": lambda u, v: np.minimum(_box(u, v, 0.95, 0.27), _box(u, v, 0.27, 0.95)),
    "ring": lambda u, v: np.abs(np.hypot(u, v) - 0.68) - 0.22,
    "crescent": lambda u, v: np.maximum(_circle(u, v, 0.9), -_circle(u, v, 0.72, 0.45)),
    "arrow": lambda u, v: np.minimum(_box(u, v, 0.55, 0.18, -0.35),
                                     _convex(u, v, [(0.1, -0.65), (1.0, 0.0), (0.1, 0.65)])),
    "hexagon": lambda u, v: _convex(u, v, _regular(6, 0.95)),
    "dumbbell": lambda u, v: np.minimum(np.minimum(_circle(u, v, 0.4, -0.58), _circle(u, v, 0.4, 0.58)),
                                        _box(u, v, 0.6, 0.13)),
    # Ten held-out classes, used only by fewshot/.
    "pentagon": lambda u, v: _convex(u, v, _regular(5, 0.95, -np.pi / 2)),
    "heart": lambda u, v: np.minimum(np.minimum(_circle(u, v, 0.45, -0.4, -0.3), _circle(u, v, 0.45, 0.4, -0.3)),
                                     _convex(u, v, [(-0.83, -0.12), (0.83, -0.12), (0.0, 0.95)])),
    "diamond": lambda u, v: _convex(u, v, [(1.0, 0.0), (0.0, 0.55), (-1.0, 0.0), (0.0, -0.55)]),
    "ell": lambda u, v: np.minimum(_box(u, v, 0.22, 0.9, -0.45), _box(u, v, 0.72, 0.22, 0.05, 0.68)),
    "tee": lambda u, v: np.minimum(_box(u, v, 0.9, 0.22, 0.0, -0.7), _box(u, v, 0.22, 0.8, 0.0, 0.1)),
    "frame": lambda u, v: np.maximum(_box(u, v, 0.8, 0.8), -_box(u, v, 0.5, 0.5)),
    "halfmoon": lambda u, v: np.maximum(_circle(u, v, 0.95, 0.0, 0.35), v - 0.35),
    "trefoil": lambda u, v: np.minimum.reduce([_circle(u, v, 0.45, 0.5 * np.cos(a), 0.5 * np.sin(a))
                                               for a in np.deg2rad([90, 210, 330])]),
    "spikes": lambda u, v: _star(u, v, 8, 1.0, 0.5),
    "hourglass": lambda u, v: np.minimum.reduce([_convex(u, v, [(-0.7, -0.95), (0.7, -0.95), (0.0, 0.0)]),
                                                 _convex(u, v, [(-0.7, 0.95), (0.7, 0.95), (0.0, 0.0)]),
                                                 _box(u, v, 0.12, 0.2)]),
}

# Sorted, so a class's index here is its ImageFolder target, its VOC class index and COCO id - 1.
CLASSES: tuple[str, ...] = ("arrow", "crescent", "cross", "disc", "dumbbell",
                            "hexagon", "ring", "square", "star", "triangle")
HELDOUT_CLASSES: tuple[str, ...] = ("diamond", "ell", "frame", "halfmoon", "heart",
                                    "hourglass", "pentagon", "spikes", "tee", "trefoil")
assert list(CLASSES) == sorted(CLASSES) and list(HELDOUT_CLASSES) == sorted(HELDOUT_CLASSES)


@dataclass(frozen=True)
class EmbeddedSpec:
    """Sizes and seed of one generated copy. `embedded_root()` always uses the defaults."""

    seed: int = 0
    image_size: int = 64
    train_per_class: int = 200
    val_per_class: int = 40
    test_per_class: int = 40
    fewshot_per_class: int = 40
    scene_size: int = 128
    scenes_trainval: int = 400
    scenes_test: int = 200


DEFAULT_SPEC = EmbeddedSpec()

# Each part of the dataset has its own random streams: rng(seed, part, class, index).
_PART = {"train": 0, "val": 1, "test": 2, "fewshot": 3, "scene": 4}


def _rng(seed: int, part: str, cls: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _PART[part], cls, index])


# --------------------------------------------------------------------------------------------
# Rendering

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
class _Placement:
    """One object's pose on the canvas and its rendered coverage."""

    name: str
    u: np.ndarray  # object coordinates of every pixel
    v: np.ndarray
    sdf_px: np.ndarray  # signed distance in pixels
    alpha: np.ndarray  # anti-aliased coverage in [0, 1]


def _place(name: str, size: int, cx: float, cy: float, radius: float, angle: float, aspect: float) -> _Placement:
    centres = np.arange(size, dtype=np.float32) + np.float32(0.5)  # pixel centres, float32 for speed
    dx, dy = centres[None, :] - np.float32(cx), centres[:, None] - np.float32(cy)
    c, s = np.float32(np.cos(angle) / (radius * aspect)), np.float32(np.sin(angle) / (radius * aspect))
    u = dx * c + dy * s
    c, s = np.float32(np.cos(angle) * aspect / radius), np.float32(np.sin(angle) * aspect / radius)
    v = dy * c - dx * s
    sdf_px = SHAPES[name](u, v) * np.float32(radius)
    return _Placement(name, u, v, sdf_px, np.clip(np.float32(0.5) - sdf_px, 0.0, 1.0))


def _texture(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mixing weight in [0, 1] between the object's two colours; moves with the object's pose."""
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


def _paint(rng: np.random.Generator, canvas: np.ndarray, p: _Placement, colour: Callable[..., np.ndarray]) -> None:
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


def _finish(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(rng.uniform(0.005, 0.03))  # sensor noise
    return (np.clip(canvas, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _plain_background(rng: np.random.Generator, size: int, palette: tuple[np.ndarray, ...] = PALETTE) -> np.ndarray:
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
    canvas = _plain_background(rng, size, (HELDOUT_COLOURS[1],) if heldout else PALETTE)
    cx, cy = size / 2 + rng.uniform(-0.06, 0.06, 2) * size
    p = _place(name, size, cx, cy, radius=rng.uniform(0.32, 0.42) * size,
               angle=rng.uniform(-0.45, 0.45), aspect=rng.uniform(0.9, 1.1))
    _paint(rng, canvas, p, colour=_heldout_colour if heldout else _palette_colour)
    return _finish(rng, canvas)


def _heldout_colour(rng: np.random.Generator, avoid: np.ndarray | None = None) -> np.ndarray:
    return _palette_colour(rng, palette=(HELDOUT_COLOURS[0],))


def render_classify_image(split: str, class_index: int, index: int, spec: EmbeddedSpec = DEFAULT_SPEC) -> np.ndarray:
    """The uint8 (H, W, 3) image `classify/<split>/<CLASSES[class_index]>/<index>.png` of a spec."""
    rng = _rng(spec.seed, split, class_index, index)
    return _render_single(rng, CLASSES[class_index], spec.image_size)


def render_fewshot_image(class_index: int, index: int, spec: EmbeddedSpec = DEFAULT_SPEC) -> np.ndarray:
    """The uint8 image `fewshot/<HELDOUT_CLASSES[class_index]>/<index>.png` of a spec."""
    rng = _rng(spec.seed, "fewshot", class_index, index)
    return _render_single(rng, HELDOUT_CLASSES[class_index], spec.image_size, heldout=True)


@dataclass(frozen=True)
class SceneObject:
    """One annotated object of a scene. `box` is 0-based inclusive pixels (x0, y0, x1, y1) of its
    visible part; VOC adds 1 to each coordinate, COCO writes [x0, y0, x1 - x0 + 1, y1 - y0 + 1]."""

    name: str
    box: tuple[int, int, int, int]
    visible: np.ndarray  # bool (H, W): pixels where this object is seen
    truncated: bool
    difficult: bool


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # uint8 (H, W, 3)
    objects: tuple[SceneObject, ...]


def render_scene(index: int, spec: EmbeddedSpec = DEFAULT_SPEC) -> Scene:
    """Scene `index` (0-based over trainval then test) with 1-4 objects and their annotations, drawn
    as the one-object images are (plain, rotated by at most 26 degrees) in HELDOUT_COLOURS.

    Objects are placed one after another; a placement that would hide more than 60% of an object
    below it is redrawn, so every annotated object stays visible. An object is `difficult` when its
    visible box is under 10 px on a side or more than 40% of it is occluded, `truncated` when it
    touches the image border.
    """
    rng = _rng(spec.seed, "scene", 0, index)
    size = spec.scene_size
    placed: list[_Placement] = []
    visible: list[np.ndarray] = []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(20):
            name = CLASSES[int(rng.integers(len(CLASSES)))]
            tiny = rng.random() < 0.2
            radius = rng.uniform(4.0, 7.0) if tiny else rng.uniform(0.08, 0.22) * size
            cx, cy = rng.uniform(0.4 * radius, size - 0.4 * radius, 2)
            p = _place(name, size, cx, cy, radius, rng.uniform(-0.45, 0.45), rng.uniform(0.88, 1.12))
            cover = p.alpha > 0.5
            if cover.sum() < 6:
                continue
            kept = [vis & ~cover for vis in visible]
            full = [q.alpha > 0.5 for q in placed]
            if all(k.sum() >= max(6, 0.4 * f.sum()) for k, f in zip(kept, full)):
                placed.append(p)
                visible = kept + [cover]
                break
    canvas = _plain_background(rng, size, (HELDOUT_COLOURS[1],))
    for p in placed:
        _paint(rng, canvas, p, colour=_heldout_colour)
    image = _finish(rng, canvas)

    objects = []
    for p, vis in zip(placed, visible):
        rows, cols = np.flatnonzero(vis.any(axis=1)), np.flatnonzero(vis.any(axis=0))
        box = (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))
        full = p.alpha > 0.5
        truncated = bool(full[0].any() or full[-1].any() or full[:, 0].any() or full[:, -1].any())
        small = min(box[2] - box[0], box[3] - box[1]) + 1 < 10
        occluded = vis.sum() < 0.6 * full.sum()
        objects.append(SceneObject(p.name, box, vis, truncated, bool(small or occluded)))
    return Scene(image, tuple(objects))


# --------------------------------------------------------------------------------------------
# Writing the real on-disk formats

def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _jpeg_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _voc_xml(image_id: str, size: int, objects: tuple[SceneObject, ...]) -> str:
    """An annotation exactly in the VOC2007 layout (tab-indented, no XML declaration)."""
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = "VOC2007"
    ET.SubElement(ann, "filename").text = f"{image_id}.jpg"
    source = ET.SubElement(ann, "source")
    ET.SubElement(source, "database").text = "The hexa-zoo embedded dataset"
    ET.SubElement(source, "annotation").text = "hexa_zoo.embedded"
    ET.SubElement(source, "image").text = "procedural"
    size_el = ET.SubElement(ann, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(size_el, tag).text = str(value)
    ET.SubElement(ann, "segmented").text = "0"
    for obj in objects:
        el = ET.SubElement(ann, "object")
        ET.SubElement(el, "name").text = obj.name
        ET.SubElement(el, "pose").text = "Unspecified"
        ET.SubElement(el, "truncated").text = str(int(obj.truncated))
        ET.SubElement(el, "difficult").text = str(int(obj.difficult))
        bnd = ET.SubElement(el, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), obj.box):
            ET.SubElement(bnd, tag).text = str(value + 1)  # VOC pixels are 1-based
    ET.indent(ann, space="\t")
    return ET.tostring(ann, encoding="unicode") + "\n"


def _coco_json(scenes: list[tuple[str, Scene]], size: int) -> dict:
    from pycocotools import mask as mask_utils

    images, annotations = [], []
    for image_id, scene in scenes:
        images.append({"id": int(image_id), "file_name": f"{image_id}.jpg", "width": size, "height": size})
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            rle = mask_utils.encode(np.asfortranarray(obj.visible.astype(np.uint8)))
            annotations.append({
                "id": len(annotations) + 1, "image_id": int(image_id),
                "category_id": CLASSES.index(obj.name) + 1,
                "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1],
                "area": int(obj.visible.sum()), "iscrowd": 0,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "difficult": int(obj.difficult),  # not a COCO field; pycocotools ignores it
            })
    return {
        "info": {"description": "hexa-zoo embedded dataset (synthetic, for smoke tests)", "version": str(FORMAT_VERSION)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)],
    }


def _write_classify(root: Path, spec: EmbeddedSpec) -> dict[str, int]:
    counts = {}
    for split, n in (("train", spec.train_per_class), ("val", spec.val_per_class), ("test", spec.test_per_class)):
        for c, name in enumerate(CLASSES):
            folder = root / "classify" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                _save_png(render_classify_image(split, c, i, spec), folder / f"{i:04d}.png")
        counts[f"classify/{split}"] = n * len(CLASSES)
    for c, name in enumerate(HELDOUT_CLASSES):
        folder = root / "fewshot" / name
        folder.mkdir(parents=True)
        for i in range(spec.fewshot_per_class):
            _save_png(render_fewshot_image(c, i, spec), folder / f"{i:04d}.png")
    counts["fewshot"] = spec.fewshot_per_class * len(HELDOUT_CLASSES)
    return counts


def _write_scenes(root: Path, spec: EmbeddedSpec) -> dict[str, int]:
    voc = root / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (voc / sub).mkdir(parents=True)
    for sub in ("annotations", "train", "val"):
        (root / "coco" / sub).mkdir(parents=True)

    n_total = spec.scenes_trainval + spec.scenes_test
    splits = {"trainval": [], "test": []}
    scenes = {}
    for i in range(n_total):
        image_id = f"{i + 1:06d}"
        scene = render_scene(i, spec)
        scenes[image_id] = scene
        split = "trainval" if i < spec.scenes_trainval else "test"
        splits[split].append(image_id)
        jpeg = _jpeg_bytes(scene.image)
        (voc / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpeg)
        (root / "coco" / ("train" if split == "trainval" else "val") / f"{image_id}.jpg").write_bytes(jpeg)
        (voc / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(image_id, spec.scene_size, scene.objects))

    half = len(splits["trainval"]) // 2
    splits["train"], splits["val"] = splits["trainval"][:half], splits["trainval"][half:]
    main = voc / "ImageSets" / "Main"
    for split, ids in splits.items():
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for name in CLASSES:
            lines = []
            for image_id in ids:
                flags = [o.difficult for o in scenes[image_id].objects if o.name == name]
                label = -1 if not flags else (1 if not all(flags) else 0)  # 0: only difficult ones
                lines.append(f"{image_id} {label:2d}\n")
            (main / f"{name}_{split}.txt").write_text("".join(lines))

    for coco_split, voc_split in (("train", "trainval"), ("val", "test")):
        data = _coco_json([(i, scenes[i]) for i in splits[voc_split]], spec.scene_size)
        (root / "coco" / "annotations" / f"instances_{coco_split}.json").write_text(json.dumps(data))
    objects = [o for s in scenes.values() for o in s.objects]
    return {"voc2007/trainval": len(splits["trainval"]), "voc2007/test": len(splits["test"]),
            "objects": len(objects), "objects_difficult": sum(o.difficult for o in objects),
            "objects_truncated": sum(o.truncated for o in objects)}


def fingerprint(root: str | os.PathLike) -> str:
    """sha256 over every file's relative path and content sha256, in sorted order (manifest excluded)."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json"):
        rel = path.relative_to(root).as_posix()
        digest.update(f"{rel}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


def generate(root: str | os.PathLike, spec: EmbeddedSpec = DEFAULT_SPEC) -> dict:
    """Write one complete copy of the dataset into `root` (created; must be empty) and return its manifest.

    Not atomic by itself: `embedded_root()` calls it on a temporary folder and renames the result.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise DataError(f"Cannot generate the embedded dataset into {root}: the folder is not empty.",
                        fix="Choose a new or empty folder.")
    start = time.perf_counter()
    counts = _write_classify(root, spec)
    counts.update(_write_scenes(root, spec))
    manifest = {
        "name": "hexa-zoo embedded dataset",
        "version": FORMAT_VERSION,
        "seed": spec.seed,
        "spec": dataclasses.asdict(spec),
        "classes": list(CLASSES),
        "heldout_classes": list(HELDOUT_CLASSES),
        "counts": counts,
        "generator": _generator_id(),
        "fingerprint": fingerprint(root),
        "note": "Synthetic smoke-test and teaching data; its numbers do not predict ImageNet/VOC/COCO numbers.",
    }
    atomic_write_json(root / "manifest.json", manifest)
    log.info("generated the embedded dataset in %.1f s", time.perf_counter() - start)
    return manifest


# --------------------------------------------------------------------------------------------
# Where the dataset lives

def data_home() -> Path:
    """`$HEXA_DATA_HOME`, default `~/.cache/hexa_zoo/data`; read at call time."""
    return Path(os.environ.get("HEXA_DATA_HOME") or Path.home() / ".cache" / "hexa_zoo" / "data").expanduser()


def read_manifest(root: str | os.PathLike) -> dict | None:
    """The manifest of a complete copy at `root`, or None if there is none (or it is unreadable)."""
    try:
        manifest = json.loads((Path(root) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _generator_id() -> str:
    """Identifies the code that drew the images: a copy made by other code is regenerated."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _is_current(root: Path) -> bool:
    manifest = read_manifest(root)
    return (manifest is not None and manifest.get("version") == FORMAT_VERSION
            and manifest.get("spec") == dataclasses.asdict(DEFAULT_SPEC)
            and manifest.get("generator") == _generator_id())


@contextlib.contextmanager
def _build_lock(home: Path) -> Iterator[None]:
    """Serialise generation between processes where flock exists, so a race does the work once.
    Correctness does not depend on it: the rename below is atomic either way."""
    try:
        import fcntl
    except ImportError:  # Windows: two racers may both build; the loser's copy is discarded
        yield
        return
    with open(home / f".{FOLDER_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def embedded_root() -> Path:
    """The root of the embedded dataset, generating it on first use (a few seconds, once).

    Built in a temporary folder beside the target and renamed into place, so readers only ever see a
    complete copy; concurrent callers wait for one builder (flock) or, without flock, keep the copy
    that was renamed first. A copy left by an older version of this module is replaced.
    """
    root = data_home() / FOLDER_NAME
    if _is_current(root):
        return root
    home = root.parent
    home.mkdir(parents=True, exist_ok=True)
    with _build_lock(home):
        if _is_current(root):  # another process built it while we waited
            return root
        if root.exists() and read_manifest(root) is None:
            raise DataError(f"{root} exists but is not a copy of the embedded dataset (no readable manifest.json).",
                            fix="Delete that folder (it is regenerated on next use), or set HEXA_DATA_HOME elsewhere.")
        log.warning("Generating the embedded dataset into %s (once, a few seconds)...", root)
        tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER_NAME}.", suffix=".tmp", dir=home))
        stale = home / f".{FOLDER_NAME}.stale-{os.getpid()}"
        try:
            generate(tmp, DEFAULT_SPEC)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the data is not
            if root.exists():  # an outdated copy: move it aside, then swap the new one in
                os.rename(root, stale)
            try:
                os.rename(tmp, root)
            except OSError:
                if not _is_current(root):  # a racer without flock won: use its copy, else fail
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(stale, ignore_errors=True)
    return root


def resolve_data(spec: str | os.PathLike) -> Path:
    """`"embedded"` -> `embedded_root()`; anything else must be an existing path."""
    if str(spec) == "embedded":
        return embedded_root()
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"Data path {path} does not exist.",
                        fix="Give an existing folder (an ImageFolder tree, a flat folder of images, a VOCdevkit "
                            "or COCO folder), or use --data embedded for the built-in dataset.")
    return path.resolve()
