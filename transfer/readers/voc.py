"""VOCdevkit (VOC2007, VOC2012): `read_voc`, `voc_classes`, `voc_image_labels`, `read_voc_imageset_labels`.

Boxes stay in VOC's convention, 1-based inclusive pixels (xmin, ymin, xmax, ymax), as in the XML. Nothing is
dropped silently: a malformed annotation or a missing image raises DataError naming the file and the fix.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hexa_zoo.errors import DataError


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
