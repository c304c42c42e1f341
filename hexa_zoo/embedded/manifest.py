"""One complete copy of the embedded dataset written into a folder, and its manifest: the version,
seed, sizes and counts, the code that drew it and a sha256 fingerprint of every file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path

from ..errors import DataError
from ..fileio import atomic_write_json
from .shapes import CLASSES, HELDOUT_CLASSES
from .spec import DEFAULT_SPEC, FORMAT_VERSION, EmbeddedSpec
from .writers import write_classify, write_scenes

log = logging.getLogger(__name__)


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
    counts = write_classify(root, spec)
    counts.update(write_scenes(root, spec))
    manifest = {
        "name": "hexa-zoo embedded dataset",
        "version": FORMAT_VERSION,
        "seed": spec.seed,
        "spec": dataclasses.asdict(spec),
        "classes": list(CLASSES),
        "heldout_classes": list(HELDOUT_CLASSES),
        "counts": counts,
        "generator": generator_id(),
        "fingerprint": fingerprint(root),
        "note": "Synthetic smoke-test and teaching data; its numbers do not predict ImageNet/VOC/COCO numbers.",
    }
    atomic_write_json(root / "manifest.json", manifest)
    log.info("generated the embedded dataset in %.1f s", time.perf_counter() - start)
    return manifest


def read_manifest(root: str | os.PathLike) -> dict | None:
    """The manifest of a complete copy at `root`, or None if there is none (or it is unreadable)."""
    try:
        manifest = json.loads((Path(root) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def generator_id() -> str:
    """Identifies the code that drew the images (every module of this package): a copy made by other
    code is regenerated."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
