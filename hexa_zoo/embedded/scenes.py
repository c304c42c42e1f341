"""The embedded dataset's multi-object scenes: 1-4 objects of the ten classes laid out on a 128x128
canvas, with the boxes, masks and flags (difficult, truncated) the VOC and COCO files are written from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .drawing import HELDOUT_COLOURS, Placement, finish, heldout_colour, paint, place, plain_background
from .shapes import CLASSES
from .spec import DEFAULT_SPEC, EmbeddedSpec, image_rng


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
    rng = image_rng(spec.seed, "scene", 0, index)
    size = spec.scene_size
    placed: list[Placement] = []
    visible: list[np.ndarray] = []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(20):
            name = CLASSES[int(rng.integers(len(CLASSES)))]
            tiny = rng.random() < 0.2
            radius = rng.uniform(4.0, 7.0) if tiny else rng.uniform(0.08, 0.22) * size
            cx, cy = rng.uniform(0.4 * radius, size - 0.4 * radius, 2)
            p = place(name, size, cx, cy, radius, rng.uniform(-0.45, 0.45), rng.uniform(0.88, 1.12))
            cover = p.alpha > 0.5
            if cover.sum() < 6:
                continue
            kept = [vis & ~cover for vis in visible]
            full = [q.alpha > 0.5 for q in placed]
            if all(k.sum() >= max(6, 0.4 * f.sum()) for k, f in zip(kept, full)):
                placed.append(p)
                visible = kept + [cover]
                break
    canvas = plain_background(rng, size, (HELDOUT_COLOURS[1],))
    for p in placed:
        paint(rng, canvas, p, colour=heldout_colour)
    image = finish(rng, canvas)

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
