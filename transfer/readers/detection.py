"""Detection data for `hexa transfer detection` (both backends): VOC and COCO read into one shape.

`load_detection_data(root, cfg)` reads VOC (`transfer.readers.voc.read_voc`, boxes converted to detectron2's
continuous 0-based pixels) or COCO instances JSON (pycocotools) into `DetectionData`. `cfg` is a
`transfer.protocols.detection.config.DetectionConfig` (only its data fields are read here).
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hexa_zoo.errors import ConfigError, DataError

from . import voc


@dataclass
class DetectionImage:
    """One image and its objects: boxes in continuous 0-based pixels (detectron2's convention)."""

    image_id: Any
    path: Path
    boxes: np.ndarray                   # (N, 4) float32 xyxy
    labels: np.ndarray                  # (N,) int64, 1..num_classes (0 is background)
    coco_anns: list = field(default_factory=list)  # COCO annotations (for masks)
    wide: bool = True                   # width >= height (detectron2 groups batches by this)


@dataclass
class DetectionData:
    """What training and evaluation need, for either format."""

    format: str
    classes: list[str]
    train: list[DetectionImage]
    test: list[DetectionImage]
    voc_ground_truth: dict | None = None  # image id -> VocObjects (VOC evaluation)
    coco_gt: Any = None                   # pycocotools COCO of the test split
    coco_category_ids: list[int] | None = None  # contiguous label - 1 -> COCO category id
    coco_train_api: Any = None
    files: list[Path] = field(default_factory=list)
    description: str = ""


def find_devkit(root: Path) -> Path | None:
    """The VOCdevkit folder under, at or above `root` (VOCdevkit/VOC2007 layout), or None."""
    for candidate in (root / "VOCdevkit", root, root.parent):
        if any(candidate.glob("VOC20[01][0-9]")):
            return candidate
    return None


def _split_spec(spec: str) -> tuple[str, str]:
    if not re.fullmatch(r"\d{4}:\w+", spec):
        raise ConfigError(f"VOC set {spec!r} is not YEAR:SPLIT", "write it like 2007:trainval")
    year, split = spec.split(":")
    return year, split


def load_voc(root: Path, cfg) -> DetectionData:
    """VOC train sets (concatenated) and the test set, via transfer.readers.voc.read_voc."""
    devkit = find_devkit(root)
    if devkit is None:
        raise DataError(f"no VOCdevkit (VOC2007/, VOC2012/) found at {root}",
                        "pass --data the folder that holds VOCdevkit/ or VOC2007/")
    test_year, test_split = _split_spec(cfg.voc_test)
    classes = list(voc.voc_classes(devkit, test_year))
    index = {name: i + 1 for i, name in enumerate(classes)}

    def convert(year: str, split: str) -> tuple[list[DetectionImage], list]:
        if not (devkit / f"VOC{year}").is_dir():
            raise DataError(f"{devkit / f'VOC{year}'} does not exist (needed for VOC{year} {split})",
                            "add that year, or choose the sets with --set voc_train=[2007:trainval]")
        images = voc.read_voc(devkit, year, split)
        out = []
        for im in images:
            unknown = sorted({o.name for o in im.objects} - set(index))
            if unknown:
                raise DataError(f"{im.id} in VOC{year} {split} has objects of unknown classes {unknown}",
                                f"the classes (from VOC{test_year}) are {classes}")
            # detectron2's VOC loader: 1-based inclusive pixels -> continuous coordinates (xmin-1, ymin-1).
            boxes = np.asarray([[o.bbox[0] - 1, o.bbox[1] - 1, o.bbox[2], o.bbox[3]] for o in im.objects],
                               np.float32).reshape(-1, 4)
            labels = np.asarray([index[o.name] for o in im.objects], np.int64)
            # detectron2 trains on difficult objects too ("they don't hurt accuracy").
            out.append(DetectionImage(f"{year}_{im.id}", Path(im.path), boxes, labels, wide=im.width >= im.height))
        return out, images

    train = []
    for spec in cfg.voc_train:
        train += convert(*_split_spec(spec))[0]
    test, raw = convert(test_year, test_split)
    ground_truth = {f"{test_year}_{im.id}": list(im.objects) for im in raw}
    return DetectionData("voc", classes, train, test, voc_ground_truth=ground_truth,
                         files=[d.path for d in train + test],
                         description=f"VOC {'+'.join(cfg.voc_train)} -> {cfg.voc_test}")


def _load_coco_api(ann: Path):
    from pycocotools.coco import COCO

    if not ann.is_file():
        raise DataError(f"COCO annotation file {ann} does not exist",
                        "pass --data the COCO root (annotations/instances_<split>.json, <split>/ images)")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(ann))
    except (ValueError, KeyError, TypeError, AssertionError) as err:
        raise DataError(f"COCO annotation file {ann} is malformed: {err!r}", "re-export or re-download it") from None


def load_coco(root: Path, cfg) -> DetectionData:
    """COCO train and test splits from instances JSON (crowd boxes left out of training, like detectron2)."""
    if not (root / "annotations").is_dir() and (root / "coco" / "annotations").is_dir():
        root = root / "coco"
    train_api = _load_coco_api(root / "annotations" / f"instances_{cfg.coco_train}.json")
    test_api = _load_coco_api(root / "annotations" / f"instances_{cfg.coco_test}.json")
    category_ids = sorted(test_api.getCatIds())
    classes = [test_api.loadCats(c)[0]["name"] for c in category_ids]
    label_of = {c: i + 1 for i, c in enumerate(category_ids)}

    def convert(api, split: str, training: bool) -> list[DetectionImage]:
        out = []
        for image_id in sorted(api.getImgIds()):
            info = api.loadImgs(image_id)[0]
            path = root / split / info["file_name"]
            if not path.is_file():
                raise DataError(f"image {path} listed in instances_{split}.json does not exist",
                                "restore the image or the matching annotation file")
            anns = [a for a in api.loadAnns(api.getAnnIds(imgIds=image_id))
                    if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0]
            if training and not anns:
                continue  # detectron2 FILTER_EMPTY_ANNOTATIONS: nothing to learn from
            boxes = np.asarray([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                                for a in anns], np.float32).reshape(-1, 4)
            labels = np.asarray([label_of[a["category_id"]] for a in anns], np.int64)
            out.append(DetectionImage(image_id, path, boxes, labels, anns,
                                      wide=int(info["width"]) >= int(info["height"])))
        return out

    train, test = convert(train_api, cfg.coco_train, True), convert(test_api, cfg.coco_test, False)
    return DetectionData("coco", classes, train, test, coco_gt=test_api, coco_category_ids=category_ids,
                         coco_train_api=train_api, files=[d.path for d in train + test],
                         description=f"COCO {cfg.coco_train} -> {cfg.coco_test}")


def load_detection_data(root: Path, cfg) -> DetectionData:
    """VOC or COCO at `root` (`format=auto` prefers a VOCdevkit when both are there)."""
    fmt = cfg.format
    if fmt == "auto":
        fmt = "coco" if cfg.masks or find_devkit(root) is None else "voc"
    if cfg.masks and fmt != "coco":
        raise ConfigError("masks=true needs COCO data (VOC has no instance masks)", "use --set format=coco")
    return load_coco(root, cfg) if fmt == "coco" else load_voc(root, cfg)
