"""Readers for the real on-disk formats the transfer protocols use.

- VOCdevkit (VOC2007, VOC2012): `read_voc`, `voc_classes`, `voc_image_labels`, `read_voc_imageset_labels`.
  Boxes stay in VOC's convention, 1-based inclusive pixels (xmin, ymin, xmax, ymax), as in the XML.
- COCO instances JSON: `read_coco` (parsed with our checks, indexed with pycocotools for evaluation).
- ImageNet subsets: SimCLR's `1percent.txt` / `10percent.txt` (`read_subset_list`, verified by line
  count and sha256), and `balanced_subset`, a deterministic class-balanced sampler of the same sizes,
  which is an alternative to the official lists, not a copy of them.

Nothing is dropped silently: a malformed annotation, a missing image or a bad list raises DataError
naming the file and what to do about it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hexa_zoo.errors import DataError
from hexa_zoo.fileio import sha256_file

# --------------------------------------------------------------------------------------------
# VOCdevkit


@dataclass(frozen=True)
class VocObject:
    name: str
    bbox: tuple[int, int, int, int]  # (xmin, ymin, xmax, ymax), VOC 1-based inclusive pixels
    difficult: bool
    truncated: bool = False
    pose: str = "Unspecified"


@dataclass(frozen=True)
class VocImage:
    id: str
    path: Path  # JPEGImages/<id>.jpg
    width: int
    height: int
    objects: tuple[VocObject, ...] = field(default_factory=tuple)


def voc_year_dir(devkit_root: str | os.PathLike, year: str | int) -> Path:
    """`<devkit>/VOC<year>`; also accepts the VOC<year> folder itself, or a folder holding VOCdevkit/."""
    root = Path(devkit_root)
    for candidate in (root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}", root):
        if candidate.name == f"VOC{year}" and candidate.is_dir():
            return candidate
    raise DataError(f"No VOC{year} folder at {root} (looked for {root / f'VOC{year}'}).",
                    fix="Pass the VOCdevkit folder that holds VOC2007/ and/or VOC2012/ "
                        "(each with Annotations/, ImageSets/Main/, JPEGImages/).")


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"VOC image set {path} does not exist.",
                        fix="Check the year and split (train, val, trainval, test); VOC2012 has no public test set.")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _int_field(el: ET.Element | None, tag: str, xml_path: Path, default: int | None = None) -> int:
    node = el.find(tag) if el is not None else None
    if node is None or node.text is None or not node.text.strip():
        if default is not None:
            return default
        raise DataError(f"VOC annotation {xml_path} has no <{tag}>.", fix="Repair or re-download the annotation.")
    try:
        return round(float(node.text))  # a few VOC2012 boxes are written as floats
    except ValueError:
        raise DataError(f"VOC annotation {xml_path}: <{tag}> is {node.text!r}, not a number.",
                        fix="Repair or re-download the annotation.") from None


def _parse_voc_xml(xml_path: Path, image_id: str, image_path: Path) -> VocImage:
    try:
        ann = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise DataError(f"VOC annotation {xml_path} is not valid XML ({err}).",
                        fix="Repair or re-download the annotation.") from None
    size = ann.find("size")
    width, height = _int_field(size, "width", xml_path, 0), _int_field(size, "height", xml_path, 0)
    if width <= 0 or height <= 0:  # a handful of real files lack a size: read it from the image header
        from PIL import Image

        with Image.open(image_path) as img:
            width, height = img.size
    objects = []
    for obj in ann.findall("object"):
        name_el = obj.find("name")
        if name_el is None or not (name_el.text or "").strip():
            raise DataError(f"VOC annotation {xml_path} has an <object> without a <name>.",
                            fix="Repair or re-download the annotation.")
        box_el = obj.find("bndbox")
        if box_el is None:
            raise DataError(f"VOC annotation {xml_path}: object {name_el.text.strip()!r} has no <bndbox>.",
                            fix="Repair or re-download the annotation.")
        box = tuple(_int_field(box_el, t, xml_path) for t in ("xmin", "ymin", "xmax", "ymax"))
        if box[0] > box[2] or box[1] > box[3]:
            raise DataError(f"VOC annotation {xml_path}: box {box} of {name_el.text.strip()!r} has min > max.",
                            fix="Repair or re-download the annotation.")
        pose_el = obj.find("pose")
        objects.append(VocObject(
            name=name_el.text.strip(), bbox=box,
            difficult=bool(_int_field(obj, "difficult", xml_path, 0)),  # some VOC2012 objects omit it
            truncated=bool(_int_field(obj, "truncated", xml_path, 0)),
            pose=(pose_el.text or "Unspecified").strip() if pose_el is not None else "Unspecified"))
    return VocImage(image_id, image_path, width, height, tuple(objects))


def read_voc(devkit_root: str | os.PathLike, year: str | int, split: str) -> list[VocImage]:
    """Every image of `ImageSets/Main/<split>.txt` with its objects, in the list's order.

    Raises DataError naming the file for a missing list, annotation or image, or malformed XML.
    """
    voc = voc_year_dir(devkit_root, year)
    images = []
    for image_id in _read_ids(voc / "ImageSets" / "Main" / f"{split}.txt"):
        xml_path = voc / "Annotations" / f"{image_id}.xml"
        image_path = voc / "JPEGImages" / f"{image_id}.jpg"
        if not xml_path.is_file():
            raise DataError(f"VOC annotation {xml_path} is missing (listed in {split}.txt).",
                            fix="Re-extract the VOC archive; annotations and images must be complete.")
        if not image_path.is_file():
            raise DataError(f"VOC image {image_path} is missing (listed in {split}.txt).",
                            fix="Re-extract the VOC archive; annotations and images must be complete.")
        images.append(_parse_voc_xml(xml_path, image_id, image_path))
    return images


def voc_classes(devkit_root: str | os.PathLike, year: str | int) -> tuple[str, ...]:
    """The class names, sorted (for real VOC: the usual 20, aeroplane ... tvmonitor).

    Taken from the per-class lists `ImageSets/Main/<cls>_trainval.txt`; without them, from the
    object names in the trainval annotations.
    """
    main = voc_year_dir(devkit_root, year) / "ImageSets" / "Main"
    names = sorted(p.name[: -len("_trainval.txt")] for p in main.glob("*_trainval.txt"))
    if not names:
        names = sorted({o.name for im in read_voc(devkit_root, year, "trainval") for o in im.objects})
    if not names:
        raise DataError(f"Found no VOC classes under {main} (no <cls>_trainval.txt and no objects).",
                        fix="Pass a complete VOCdevkit.")
    return tuple(names)


def voc_image_labels(images: Sequence[VocImage], classes: Sequence[str]) -> np.ndarray:
    """(N, C) int8 image labels as in VOC's per-class lists: 1 a non-difficult object of the class is
    present, 0 only difficult ones are (ignored by the VOC07 SVM protocol), -1 absent."""
    index = {c: j for j, c in enumerate(classes)}
    labels = np.full((len(images), len(classes)), -1, dtype=np.int8)
    for i, im in enumerate(images):
        for obj in im.objects:
            if obj.name not in index:
                raise DataError(f"VOC image {im.id} has an object of class {obj.name!r}, not one of {list(classes)}.",
                                fix="Use the class list of the same devkit (voc_classes).")
            j = index[obj.name]
            labels[i, j] = 1 if not obj.difficult else max(labels[i, j], 0)
    return labels


def read_voc_imageset_labels(devkit_root: str | os.PathLike, year: str | int, split: str,
                             classes: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Image ids and (N, C) labels read from the per-class lists `<cls>_<split>.txt` (1 / 0 / -1)."""
    voc = voc_year_dir(devkit_root, year)
    classes = list(classes or voc_classes(devkit_root, year))
    ids = _read_ids(voc / "ImageSets" / "Main" / f"{split}.txt")
    row = {image_id: i for i, image_id in enumerate(ids)}
    labels = np.full((len(ids), len(classes)), -1, dtype=np.int8)
    for j, cls in enumerate(classes):
        path = voc / "ImageSets" / "Main" / f"{cls}_{split}.txt"
        if not path.is_file():
            raise DataError(f"VOC per-class list {path} is missing.", fix="Pass a complete VOCdevkit.")
        for n, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[0] not in row or parts[1] not in ("1", "0", "-1"):
                raise DataError(f"{path}, line {n}: {line!r} is not '<id in {split}.txt> <1|0|-1>'.",
                                fix="Repair or re-download the list.")
            labels[row[parts[0]], j] = int(parts[1])
    return ids, labels


# --------------------------------------------------------------------------------------------
# COCO instances JSON


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


# --------------------------------------------------------------------------------------------
# ImageNet subsets

# google-research/simclr imagenet_subsets/*.txt: one training file name per line ("n01440764_10026.JPEG").
# Line counts are published; the sha256 values were computed from the files in that repository
# (commit 383d4143fd8cf7879ae10f1046a9baeb753ff438).
SUBSET_LISTS = {
    "1percent": {"lines": 12811, "sha256": "71e82a48ba78252683ae334c4d019ebd5c6e855b9599c1389fbe83eb9549cf17"},
    "10percent": {"lines": 128116, "sha256": "6d09de11e7bdaf5b1f3b1f249b6183695f97310cdd20f0c03e7235b6b9392091"},
}


def read_subset_list(path: str | os.PathLike, which: str | None = None, *, check_sha256: bool = True) -> list[str]:
    """The file names of a SimCLR subset list, verified.

    `which` ("1percent" or "10percent") checks the line count and, unless `check_sha256=False`
    (for a list you edited on purpose), the sha256 recorded in `SUBSET_LISTS`. Without `which`,
    any list of file names is read unverified. Names are returned in the file's order.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Subset list {path} does not exist.",
                        fix="Download imagenet_subsets/1percent.txt or 10percent.txt from google-research/simclr, "
                            "or leave the list unset to use the class-balanced sampler instead.")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if which is not None:
        if which not in SUBSET_LISTS:
            raise DataError(f"Unknown subset {which!r}.", fix=f"Use one of {sorted(SUBSET_LISTS)}.")
        expected = SUBSET_LISTS[which]
        if len(names) != expected["lines"]:
            raise DataError(f"Subset list {path} has {len(names)} lines; SimCLR's {which}.txt has {expected['lines']}.",
                            fix=f"Use the unmodified {which}.txt from google-research/simclr (imagenet_subsets/).")
        if check_sha256 and sha256_file(path) != expected["sha256"]:
            raise DataError(f"Subset list {path} has the right length but not the sha256 of SimCLR's {which}.txt.",
                            fix="Use the unmodified file, or pass check_sha256=False if you changed it on purpose.")
    if len(set(names)) != len(names):
        raise DataError(f"Subset list {path} names some images twice.", fix="Remove the duplicate lines.")
    return names


def subset_indices(names: Sequence[str], samples: Sequence[tuple[str, int]], list_path: str | os.PathLike = "") -> list[int]:
    """Sorted indices into `samples` (an ImageFolder's (path, target) list) of the listed file names."""
    position = {Path(p).name: i for i, (p, _) in enumerate(samples)}
    missing = [n for n in names if Path(n).name not in position]
    if missing:
        raise DataError(f"{len(missing)} image(s) of subset list {list_path or '(given)'} are not in the training folder, "
                        f"e.g. {missing[:3]}.",
                        fix="Point at the ImageNet train folder the list was made from (train/<wnid>/<name>.JPEG).")
    return sorted(position[Path(n).name] for n in names)


def _balanced_quotas(sizes: Mapping[int, int], total: int, rng: np.random.Generator) -> dict[int, int]:
    """Split `total` over classes as evenly as their sizes allow (water-filling); the classes that
    get one more than the others are drawn by `rng`."""
    quotas = {c: 0 for c in sizes}
    left = min(total, sum(sizes.values()))
    open_classes = sorted((c for c in sizes if sizes[c] > 0), key=lambda c: (sizes[c], c))
    # Classes smaller than an even share give all they have; the rest share what is left.
    while open_classes and sizes[open_classes[0]] <= left // len(open_classes):
        c = open_classes.pop(0)
        quotas[c] = sizes[c]
        left -= sizes[c]
    if open_classes:
        base, extra = divmod(left, len(open_classes))
        lucky = set(rng.permutation(sorted(open_classes))[:extra].tolist())
        for c in open_classes:  # every open class has more than `base` images, so base + 1 fits
            quotas[c] = base + (c in lucky)
    return quotas


def balanced_subset(samples: Sequence[tuple[str, int]], counts: float | Mapping[int, int], seed: int = 0) -> list[int]:
    """A deterministic, class-balanced sample: sorted indices into `samples` [(path, target)].

    This is an alternative to SimCLR's official lists, not a copy of them: use `read_subset_list` to
    reproduce published numbers. `counts` is either a fraction (0.01 for "1%") or {target: count}.
    A fraction takes floor(fraction * N) images (SimCLR's sizes: 1% of ImageNet's 1,281,167 is
    12,811, 10% is 128,116) spread as evenly as possible over the classes; the classes that get one
    more are drawn by `seed`. For ImageNet this gives 189 classes x 12 + 811 x 13 (1%) and
    884 x 128 + 116 x 129 (10%), the same per-class counts as the official lists. A class with fewer
    images than its share gives all it has and the rest is spread over the others.
    """
    rng = np.random.default_rng(seed)
    targets = np.fromiter((t for _, t in samples), dtype=np.int64, count=len(samples))
    order = np.argsort(targets, kind="stable")
    classes, starts, sizes_arr = np.unique(targets[order], return_index=True, return_counts=True)
    by_class = {int(c): order[s:s + n] for c, s, n in zip(classes, starts, sizes_arr)}
    sizes = {int(c): int(n) for c, n in zip(classes, sizes_arr)}
    if isinstance(counts, Mapping):
        quotas = {int(c): int(n) for c, n in counts.items()}
        short = {c: (n, sizes.get(c, 0)) for c, n in quotas.items() if n > sizes.get(c, 0) or n < 0}
        if short:
            c, (n, have) = next(iter(short.items()))
            raise DataError(f"balanced_subset: class {c} is asked for {n} images but has {have}.",
                            fix="Lower the per-class counts or use a fraction.")
    else:
        if not 0.0 < float(counts) <= 1.0:
            raise DataError(f"balanced_subset: fraction {counts} is not in (0, 1].", fix="Use e.g. 0.01 or 0.1.")
        total = math.floor(float(counts) * len(samples) + 1e-9)
        quotas = _balanced_quotas(sizes, total, rng)
    chosen = []
    for c in sorted(quotas):
        if quotas[c]:
            chosen.extend(rng.choice(by_class[c], size=quotas[c], replace=False).tolist())
    return sorted(chosen)
