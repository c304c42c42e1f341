"""COCO instances JSON: `read_coco`, parsed with our checks and indexed with pycocotools for evaluation.

A malformed annotation or a missing image raises DataError naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hexa_zoo.errors import DataError


@dataclass(frozen=True)
class CocoObject:
    category_id: int
    name: str
    bbox: tuple[float, float, float, float]  # COCO (x, y, width, height), 0-based continuous
    area: float
    iscrowd: bool
    segmentation: Any = None  # polygons or RLE, as in the file


@dataclass(frozen=True)
class CocoImage:
    id: int
    path: Path
    width: int
    height: int
    objects: tuple[CocoObject, ...]


@dataclass
class CocoDataset:
    """A COCO instances file: images with their objects, the categories, and pycocotools' index."""

    ann_file: Path
    image_dir: Path
    images: list[CocoImage]
    categories: dict[int, str]  # category id -> name, ids ascending
    coco: Any  # pycocotools.coco.COCO over the same data, for COCOeval

    @property
    def category_ids(self) -> list[int]:
        return sorted(self.categories)


def read_coco(ann_json: str | os.PathLike, image_dir: str | os.PathLike) -> CocoDataset:
    """Read a COCO instances JSON and check that it is whole: every image file exists, every annotation
    names a known image and category and has a 4-number box. Images are sorted by id."""
    from pycocotools.coco import COCO

    ann_json, image_dir = Path(ann_json), Path(image_dir)
    broken = "Repair or re-export the annotation file."
    if not ann_json.is_file():
        raise DataError(f"COCO annotation file {ann_json} does not exist.",
                        fix="Pass annotations/instances_<split>.json of a COCO-layout dataset.")
    try:
        data = json.loads(ann_json.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"COCO annotation file {ann_json} is not valid JSON ({err}).", fix=broken) from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise DataError(f"COCO annotation file {ann_json} lacks the 'images', 'annotations' and 'categories' lists.",
                        fix=broken)
    try:
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        image_info = {int(im["id"]): (str(im["file_name"]), int(im["width"]), int(im["height"])) for im in data["images"]}
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"COCO annotation file {ann_json}: an image or category entry lacks {err}.", fix=broken) from None
    per_image: dict[int, list[CocoObject]] = {i: [] for i in image_info}
    for ann in data["annotations"]:
        try:
            image_id, cat, box = int(ann["image_id"]), int(ann["category_id"]), [float(x) for x in ann["bbox"]]
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"COCO annotation file {ann_json}: annotation {ann.get('id')} is malformed ({err!r}).",
                            fix=broken) from None
        if image_id not in image_info or cat not in categories or len(box) != 4 or box[2] < 0 or box[3] < 0:
            raise DataError(f"COCO annotation file {ann_json}: annotation {ann.get('id')} refers to an unknown image "
                            f"or category, or its bbox {box} is not [x, y, w, h] with w, h >= 0.", fix=broken)
        per_image[image_id].append(CocoObject(cat, categories[cat], tuple(box), float(ann.get("area", box[2] * box[3])),
                                              bool(ann.get("iscrowd", 0)), ann.get("segmentation")))
    images = []
    for image_id in sorted(image_info):
        name, width, height = image_info[image_id]
        path = image_dir / name
        if not path.is_file():
            raise DataError(f"COCO image {path} is missing (listed in {ann_json}).",
                            fix="Pass the image folder that belongs to this annotation file.")
        images.append(CocoImage(image_id, path, width, height, tuple(per_image[image_id])))
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return CocoDataset(ann_json, image_dir, images, dict(sorted(categories.items())), coco)
