"""The twenty shapes of the embedded dataset as signed distance functions, and which ten are classes
and which ten are held out for the few-shot split.

A shape is a function of object coordinates (u, v): negative inside, in units of the object's radius.
Unions are minima, intersections maxima, differences max(a, -b).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


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
