"""transfer.readers (voc, coco, imagenet_subsets) on fixtures written by hand in the real VOCdevkit, COCO and SimCLR layouts."""

import contextlib
import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hexa_zoo.errors import DataError
from transfer.readers import coco as coco_reader, imagenet_subsets, voc as voc_reader

VOC_XML = """<annotation>
\t<folder>VOC{year}</folder>
\t<filename>{id}.jpg</filename>
\t<source>
\t\t<database>The VOC{year} Database</database>
\t\t<annotation>PASCAL VOC{year}</annotation>
\t\t<image>flickr</image>
\t</source>
\t<size>
\t\t<width>{w}</width>
\t\t<height>{h}</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>
{objects}</annotation>
"""
VOC_OBJECT = """\t<object>
\t\t<name>{name}</name>
\t\t<pose>Left</pose>
\t\t<truncated>{truncated}</truncated>
{difficult}\t\t<bndbox>
\t\t\t<xmin>{box[0]}</xmin>
\t\t\t<ymin>{box[1]}</ymin>
\t\t\t<xmax>{box[2]}</xmax>
\t\t\t<ymax>{box[3]}</ymax>
\t\t</bndbox>
\t</object>
"""
CLASSES = ("bird", "cat", "dog")
# id -> [(name, box, difficult (None: tag absent, as in some VOC2012 files), truncated)]
IMAGES = {
    "000005": [("cat", (10, 20, 30, 40), 0, 0), ("dog", (1, 1, 48, 32), 1, 1), ("dog", (3, 4, 9, 9), 0, 0)],
    "000007": [("dog", (5, "6.0", 25, 30), None, 0)],  # a VOC2012-style float coordinate
    "000009": [("bird", (2, 3, 4, 5), 1, 0), ("bird", (7, 8, 9, 10), 1, 0)],
    "000012": [],
}
# What VOC's per-class lists say for these images: 1 present, 0 only difficult, -1 absent.
EXPECTED_LABELS = np.array([[-1, 1, 1], [-1, -1, 1], [0, -1, -1], [-1, -1, -1]])


def _write_voc(devkit: Path, year: str = "2007") -> Path:
    voc = devkit / f"VOC{year}"
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (voc / sub).mkdir(parents=True)
    for image_id, objects in IMAGES.items():
        Image.new("RGB", (50, 40), (90, 90, 90)).save(voc / "JPEGImages" / f"{image_id}.jpg")
        objs = "".join(VOC_OBJECT.format(name=n, box=b, truncated=t,
                                         difficult="" if d is None else f"\t\t<difficult>{d}</difficult>\n")
                       for n, b, d, t in objects)
        (voc / "Annotations" / f"{image_id}.xml").write_text(VOC_XML.format(year=year, id=image_id, w=50, h=40, objects=objs))
    ids = list(IMAGES)
    (voc / "ImageSets/Main/trainval.txt").write_text("".join(f"{i}\n" for i in ids))
    (voc / "ImageSets/Main/test.txt").write_text("")
    for j, cls in enumerate(CLASSES):
        lines = "".join(f"{i} {EXPECTED_LABELS[k, j]:2d}\n" for k, i in enumerate(ids))
        (voc / f"ImageSets/Main/{cls}_trainval.txt").write_text(lines)
        (voc / f"ImageSets/Main/{cls}_test.txt").write_text("")
    return voc


def test_read_voc(tmp_path):
    voc = _write_voc(tmp_path / "VOCdevkit")
    images = voc_reader.read_voc(tmp_path / "VOCdevkit", 2007, "trainval")
    assert [im.id for im in images] == list(IMAGES)
    first = images[0]
    assert (first.width, first.height, first.path) == (50, 40, voc / "JPEGImages" / "000005.jpg")
    assert first.objects[0] == voc_reader.VocObject("cat", (10, 20, 30, 40), False, False, "Left")
    assert first.objects[1].difficult and first.objects[1].truncated and first.objects[1].bbox == (1, 1, 48, 32)
    assert images[1].objects[0].bbox == (5, 6, 25, 30) and not images[1].objects[0].difficult
    assert images[3].objects == ()
    # The VOC2007 folder itself, or the folder above VOCdevkit, work too.
    assert voc_reader.read_voc(voc, "2007", "trainval") == images
    assert voc_reader.read_voc(tmp_path, "2007", "trainval") == images


def test_voc_classes_and_image_labels(tmp_path):
    _write_voc(tmp_path / "VOCdevkit")
    devkit = tmp_path / "VOCdevkit"
    assert voc_reader.voc_classes(devkit, 2007) == CLASSES
    labels = voc_reader.voc_image_labels(voc_reader.read_voc(devkit, 2007, "trainval"), CLASSES)
    np.testing.assert_array_equal(labels, EXPECTED_LABELS)
    ids, from_lists = voc_reader.read_voc_imageset_labels(devkit, 2007, "trainval")
    assert ids == list(IMAGES)
    np.testing.assert_array_equal(from_lists, EXPECTED_LABELS)
    with pytest.raises(DataError, match="'cat'"):
        voc_reader.voc_image_labels(voc_reader.read_voc(devkit, 2007, "trainval"), ("bird", "dog"))
    # Without per-class lists, the classes come from the annotations.
    for p in (devkit / "VOC2007/ImageSets/Main").glob("*_*.txt"):
        p.unlink()
    assert voc_reader.voc_classes(devkit, 2007) == CLASSES


@pytest.mark.parametrize("damage, culprit, message", [
    (lambda voc: (voc / "Annotations/000007.xml").write_text("<annotation><object>"), "Annotations/000007.xml", "not valid XML"),
    (lambda voc: (voc / "JPEGImages/000009.jpg").unlink(), "JPEGImages/000009.jpg", "missing"),
    (lambda voc: (voc / "Annotations/000012.xml").unlink(), "Annotations/000012.xml", "missing"),
    (lambda voc: (voc / "ImageSets/Main/trainval.txt").unlink(), "ImageSets/Main/trainval.txt", "does not exist"),
    (lambda voc: (voc / "Annotations/000005.xml").write_text(
        (voc / "Annotations/000005.xml").read_text().replace("<xmax>30</xmax>", "<xmax>3</xmax>")),
     "Annotations/000005.xml", "min > max"),
    (lambda voc: (voc / "Annotations/000005.xml").write_text(
        (voc / "Annotations/000005.xml").read_text().replace("<ymin>20</ymin>", "<ymin>twenty</ymin>")),
     "Annotations/000005.xml", "not a number"),
])
def test_broken_voc_names_the_file(tmp_path, damage, culprit, message):
    voc = _write_voc(tmp_path / "VOCdevkit")
    damage(voc)
    with pytest.raises(DataError, match=message) as err:
        voc_reader.read_voc(tmp_path / "VOCdevkit", 2007, "trainval")
    assert str(voc / culprit) in str(err.value)


def test_missing_year_is_an_error(tmp_path):
    _write_voc(tmp_path / "VOCdevkit")
    with pytest.raises(DataError, match="VOC2012"):
        voc_reader.read_voc(tmp_path / "VOCdevkit", 2012, "trainval")


def _write_coco(root: Path) -> Path:
    (root / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (60, 40)).save(root / "val" / name)
    data = {
        "images": [{"id": 7, "file_name": "b.jpg", "width": 60, "height": 40},
                   {"id": 3, "file_name": "a.jpg", "width": 60, "height": 40}],
        "annotations": [
            {"id": 1, "image_id": 3, "category_id": 18, "bbox": [1.5, 2.0, 10.0, 20.0], "area": 200.0, "iscrowd": 0},
            {"id": 2, "image_id": 3, "category_id": 1, "bbox": [30, 5, 20, 30], "area": 600, "iscrowd": 0},
            {"id": 3, "image_id": 7, "category_id": 18, "bbox": [0, 0, 60, 40], "area": 2400, "iscrowd": 1},
        ],
        "categories": [{"id": 18, "name": "dog", "supercategory": "animal"},
                       {"id": 1, "name": "person", "supercategory": "person"}],
    }
    path = root / "annotations" / "instances_val.json"
    path.write_text(json.dumps(data))
    return path


def test_read_coco(tmp_path):
    from pycocotools.cocoeval import COCOeval

    ann = _write_coco(tmp_path)
    coco = coco_reader.read_coco(ann, tmp_path / "val")
    assert coco.categories == {1: "person", 18: "dog"} and coco.category_ids == [1, 18]
    assert [(im.id, im.path.name) for im in coco.images] == [(3, "a.jpg"), (7, "b.jpg")]
    dog, person = coco.images[0].objects
    assert (dog.name, dog.bbox, dog.area, dog.iscrowd) == ("dog", (1.5, 2.0, 10.0, 20.0), 200.0, False)
    assert (person.category_id, person.bbox) == (1, (30.0, 5.0, 20.0, 30.0))
    assert coco.images[1].objects[0].iscrowd
    # The pycocotools index is usable for evaluation: the ground truth as detections scores AP 1.
    dets = [{"image_id": 3, "category_id": o.category_id, "bbox": list(o.bbox), "score": 1.0} for o in coco.images[0].objects]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco.coco, coco.coco.loadRes(dets), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


@pytest.mark.parametrize("damage, culprit, message", [
    (lambda ann, root: ann.write_text("{not json"), "annotations/instances_val.json", "not valid JSON"),
    (lambda ann, root: ann.write_text(json.dumps({"images": []})), "annotations/instances_val.json", "lacks"),
    (lambda ann, root: ann.write_text(ann.read_text().replace('"category_id": 1,', '"category_id": 99,')),
     "annotations/instances_val.json", "unknown image or category"),
    (lambda ann, root: (root / "val" / "b.jpg").unlink(), "val/b.jpg", "missing"),
])
def test_broken_coco_names_the_file(tmp_path, damage, culprit, message):
    ann = _write_coco(tmp_path)
    damage(ann, tmp_path)
    with pytest.raises(DataError, match=message) as err:
        coco_reader.read_coco(ann, tmp_path / "val")
    assert str(tmp_path / culprit) in str(err.value)


def _subset_file(path: Path, n: int) -> Path:
    path.write_text("".join(f"n{c:08d}_{i}.JPEG\n" for i in range(n) for c in [i % 1000]))
    return path


def test_subset_list_line_count_and_checksum(tmp_path, monkeypatch):
    assert imagenet_subsets.SUBSET_LISTS["1percent"]["lines"] == 12811 and imagenet_subsets.SUBSET_LISTS["10percent"]["lines"] == 128116
    good_length = _subset_file(tmp_path / "1percent.txt", 12811)
    # Right length, wrong content: only the checksum catches it, unless switched off.
    with pytest.raises(DataError, match="sha256"):
        imagenet_subsets.read_subset_list(good_length, "1percent")
    names = imagenet_subsets.read_subset_list(good_length, "1percent", check_sha256=False)
    assert len(names) == 12811 and names[0] == "n00000000_0.JPEG"
    monkeypatch.setitem(imagenet_subsets.SUBSET_LISTS, "1percent",
                        {"lines": 12811, "sha256": hashlib.sha256(good_length.read_bytes()).hexdigest()})
    assert imagenet_subsets.read_subset_list(good_length, "1percent") == names
    with pytest.raises(DataError, match="12810 lines.*12811"):
        imagenet_subsets.read_subset_list(_subset_file(tmp_path / "short.txt", 12810), "1percent")
    with pytest.raises(DataError, match="does not exist"):
        imagenet_subsets.read_subset_list(tmp_path / "nope.txt", "10percent")


def test_subset_indices_name_missing_files(tmp_path):
    samples = [(f"/train/n0/n0_{i}.JPEG", 0) for i in range(5)]
    assert imagenet_subsets.subset_indices(["n0_3.JPEG", "n0_1.JPEG"], samples) == [1, 3]
    with pytest.raises(DataError, match="1 image.*n0_9.JPEG"):
        imagenet_subsets.subset_indices(["n0_1.JPEG", "n0_9.JPEG"], samples, "1percent.txt")


def _imagenet_like_samples() -> list[tuple[str, int]]:
    """1000 classes of 732-1300 images, 1,281,167 in all, like ImageNet's train set."""
    rng = np.random.default_rng(0)
    sizes = np.full(1000, 1300)
    sizes[rng.choice(1000, 110, replace=False)] = rng.integers(732, 1300, 110)
    sizes[0] += 1281167 - sizes.sum()
    assert sizes.sum() == 1281167 and sizes.min() >= 732
    return [("", c) for c in range(1000) for _ in range(sizes[c])]


def test_balanced_subset_has_simclr_sizes():
    samples = _imagenet_like_samples()
    for fraction, expected in ((0.01, {12: 189, 13: 811}), (0.10, {128: 884, 129: 116})):
        chosen = imagenet_subsets.balanced_subset(samples, fraction, seed=0)
        total = int(np.floor(fraction * len(samples)))
        assert len(chosen) == len(set(chosen)) == total
        per_class = Counter(samples[i][1] for i in chosen)
        assert Counter(per_class.values()) == expected  # floor(T/C) each, T mod C classes get one more
    assert imagenet_subsets.balanced_subset(samples, 0.01, seed=0) == imagenet_subsets.balanced_subset(samples, 0.01, seed=0)
    assert imagenet_subsets.balanced_subset(samples, 0.01, seed=0) != imagenet_subsets.balanced_subset(samples, 0.01, seed=1)


def test_balanced_subset_small_classes_and_exact_counts():
    samples = [("a", 0)] + [("b", 1)] * 100 + [("c", 2)] * 100 + [("d", 3)] * 2
    chosen = imagenet_subsets.balanced_subset(samples, 0.5, seed=3)  # 101 images; classes 0 and 3 give all they have
    per_class = Counter(samples[i][1] for i in chosen)
    assert per_class[0] == 1 and per_class[3] == 2 and sorted([per_class[1], per_class[2]]) == [49, 49]
    assert len(chosen) == 101
    chosen = imagenet_subsets.balanced_subset(samples, {1: 5, 3: 2}, seed=0)
    assert Counter(samples[i][1] for i in chosen) == {1: 5, 3: 2}
    with pytest.raises(DataError, match="class 3 is asked for 3"):
        imagenet_subsets.balanced_subset(samples, {3: 3})
    with pytest.raises(DataError, match="fraction"):
        imagenet_subsets.balanced_subset(samples, 1.5)
