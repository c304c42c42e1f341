"""The embedded dataset in real on-disk formats: classify/ and fewshot/ as ImageFolder PNGs, the
scenes as JPEGs in the VOCdevkit/VOC2007 layout (XML annotations, ImageSets lists) and as COCO
instances JSON with RLE masks, so the transfer readers run on the formats they read elsewhere."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from .drawing import render_classify_image, render_fewshot_image
from .scenes import Scene, SceneObject, render_scene
from .shapes import CLASSES, HELDOUT_CLASSES
from .spec import FORMAT_VERSION, EmbeddedSpec


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


def write_classify(root: Path, spec: EmbeddedSpec) -> dict[str, int]:
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


def write_scenes(root: Path, spec: EmbeddedSpec) -> dict[str, int]:
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
