"""The embedded dataset: counts, pinned content, determinism, real VOC/COCO formats, safe caching."""

import hashlib
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hexa_zoo import embedded
from hexa_zoo.embedded import CLASSES, DEFAULT_SPEC, HELDOUT_CLASSES, EmbeddedSpec, cache
from hexa_zoo.errors import DataError

TINY = EmbeddedSpec(seed=3, train_per_class=2, val_per_class=1, test_per_class=1, fewshot_per_class=1,
                    scenes_trainval=3, scenes_test=2)


@pytest.fixture(scope="session")
def root() -> Path:
    return embedded.embedded_root()  # generated once per session into the session's HEXA_DATA_HOME


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_layout_and_counts(root):
    assert root == Path(os.environ["HEXA_DATA_HOME"]) / embedded.FOLDER_NAME
    assert len(CLASSES) >= 10 and len(HELDOUT_CLASSES) >= 10 and not set(CLASSES) & set(HELDOUT_CLASSES)
    per_split = {"train": DEFAULT_SPEC.train_per_class, "val": DEFAULT_SPEC.val_per_class, "test": DEFAULT_SPEC.test_per_class}
    assert per_split == {"train": 200, "val": 40, "test": 40}
    for split, n in per_split.items():
        folders = sorted(p.name for p in (root / "classify" / split).iterdir())
        assert folders == sorted(CLASSES)
        for cls in CLASSES:
            assert len(list((root / "classify" / split / cls).glob("*.png"))) == n
    assert sorted(p.name for p in (root / "fewshot").iterdir()) == sorted(HELDOUT_CLASSES)
    assert all(len(list((root / "fewshot" / c).glob("*.png"))) == 40 for c in HELDOUT_CLASSES)
    img = Image.open(root / "classify" / "train" / CLASSES[0] / "0000.png")
    assert img.mode == "RGB" and img.size == (64, 64)
    voc = root / "VOCdevkit" / "VOC2007"
    assert len(list((voc / "JPEGImages").glob("*.jpg"))) == 600 == len(list((voc / "Annotations").glob("*.xml")))
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["counts"]["classify/train"] == 2000 and manifest["counts"]["voc2007/test"] == 200
    assert manifest["seed"] == 0 and manifest["classes"] == list(CLASSES)
    # The recorded fingerprint is the content on disk, recomputed here from the files.
    assert manifest["fingerprint"] == embedded.fingerprint(root)


# The content of the default copy: any changed pixel, box, mask or list changes it. Pinned when the
# module became a package (the data unchanged to the byte, manifest fingerprint 5e0c7ed3...); a
# deliberate change of the data bumps FORMAT_VERSION and this digest together.
PINNED_CONTENT = "8880bcfbb7bd8976134ba7e4a1475a07db92a9930afe512914d4ee4b4754c432"


def test_content_is_pinned(root):
    """Pixels are hashed decoded (PNG) or as drawn (the scenes, before JPEG), so another zlib or libjpeg
    build, which may write other bytes for the same pixels, does not fail this; the text files as bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".jpg" and p.name != "manifest.json"):
        data = np.asarray(Image.open(path)).tobytes() if path.suffix == ".png" else path.read_bytes()
        digest.update(f"{path.relative_to(root).as_posix()}\0{hashlib.sha256(data).hexdigest()}\n".encode())
    n_scenes = DEFAULT_SPEC.scenes_trainval + DEFAULT_SPEC.scenes_test
    for i in range(n_scenes):
        digest.update(embedded.render_scene(i).image.tobytes())
    assert len(list(root.rglob("*.jpg"))) == 2 * n_scenes  # VOC and COCO copies of each scene
    assert digest.hexdigest() == PINNED_CONTENT


def test_files_are_the_seeded_renders(root):
    """Each image has its own seeded stream: re-rendering any one gives the stored pixels exactly."""
    for split, c, i in [("train", 0, 0), ("train", 7, 199), ("val", 3, 5), ("test", 9, 39)]:
        stored = np.asarray(Image.open(root / "classify" / split / CLASSES[c] / f"{i:04d}.png"))
        np.testing.assert_array_equal(stored, embedded.render_classify_image(split, c, i))
    stored = np.asarray(Image.open(root / "fewshot" / HELDOUT_CLASSES[4] / "0011.png"))
    np.testing.assert_array_equal(stored, embedded.render_fewshot_image(4, 11))
    assert not np.array_equal(embedded.render_classify_image("train", 0, 0),
                              embedded.render_classify_image("train", 0, 0, EmbeddedSpec(seed=1)))


def test_generation_is_deterministic_to_the_byte(tmp_path):
    a = embedded.generate(tmp_path / "a", TINY)
    b = embedded.generate(tmp_path / "b", TINY)
    assert a["fingerprint"] == b["fingerprint"]
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    other = embedded.generate(tmp_path / "c", EmbeddedSpec(**{**TINY.__dict__, "seed": 4}))
    assert other["fingerprint"] != a["fingerprint"]
    with pytest.raises(DataError, match="not empty"):
        embedded.generate(tmp_path / "a", TINY)


def test_colour_does_not_give_the_class_away(root):
    """Colour statistics alone should be near chance, so colour jitter neither solves nor breaks the task."""

    def colour_features(split):
        x, y = [], []
        for c, cls in enumerate(CLASSES):
            for p in sorted((root / "classify" / split / cls).glob("*.png"))[:40]:
                a = np.asarray(Image.open(p), dtype=np.float64) / 255
                x.append(np.concatenate([a.mean((0, 1)), a.std((0, 1)), [1.0]]))
                y.append(c)
        return np.array(x), np.array(y)

    xtr, ytr = colour_features("train")
    xte, yte = colour_features("test")
    # A least-squares linear classifier on mean and spread of each colour channel.
    weights = np.linalg.lstsq(xtr, np.eye(len(CLASSES))[ytr], rcond=None)[0]
    train_acc = ((xtr @ weights).argmax(1) == ytr).mean()
    acc = ((xte @ weights).argmax(1) == yte).mean()
    assert acc < 0.25 and train_acc < 0.35, f"colour statistics predict the class: test {acc:.2f}, train {train_acc:.2f}"


def _xml_boxes(path: Path):
    ann = ET.parse(path).getroot()
    assert ann.findtext("folder") == "VOC2007" and ann.findtext("filename") == path.stem + ".jpg"
    assert (ann.findtext("size/width"), ann.findtext("size/height"), ann.findtext("size/depth")) == ("128", "128", "3")
    out = []
    for obj in ann.findall("object"):
        box = tuple(int(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax"))
        out.append((obj.findtext("name"), box, obj.findtext("difficult"), obj.findtext("truncated"), obj.findtext("pose")))
    return out


def test_backdrops_take_few_colours_so_instances_need_their_shape(root):
    # Freely drawn colours made (object, backdrop) an instance key that survives colour jitter; the
    # one-object images draw both from the four-colour palette instead (the 3x3 corners: backdrop only).
    palette = np.stack([c / np.linalg.norm(c) for c in embedded.PALETTE])
    used = []
    for c in range(len(CLASSES)):
        for i in range(0, 200, 25):
            corners = embedded.render_classify_image("train", c, i)[[0, 0, -1, -1], [0, -1, 0, -1]].astype(float)
            direction = corners.mean(axis=0) / np.linalg.norm(corners.mean(axis=0))
            cosines = palette @ direction
            assert cosines.max() > 0.99, (c, i, cosines)
            used.append(int(cosines.argmax()))
    assert set(used) == set(range(len(embedded.PALETTE)))


def test_voc_xml_holds_the_boxes_drawn(root):
    voc = root / "VOCdevkit" / "VOC2007"
    n_difficult = 0
    for i in range(0, 600, 37):
        scene = embedded.render_scene(i)
        image_id = f"{i + 1:06d}"
        jpeg = np.asarray(Image.open(voc / "JPEGImages" / f"{image_id}.jpg"), dtype=np.float32)
        assert np.abs(jpeg - scene.image).mean() < 10  # the file is this scene (JPEG + noise); others differ by ~60
        expected = []
        for obj in scene.objects:
            ys, xs = np.nonzero(obj.visible)  # the box recomputed from the drawn mask, then made 1-based
            expected.append((obj.name, (xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1),
                             str(int(obj.difficult)), str(int(obj.truncated)), "Unspecified"))
            n_difficult += obj.difficult
        assert _xml_boxes(voc / "Annotations" / f"{image_id}.xml") == expected
    assert n_difficult > 0


def test_voc_imagesets_follow_voc(root):
    main = root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    trainval = main.joinpath("trainval.txt").read_text().split()
    test = main.joinpath("test.txt").read_text().split()
    assert len(trainval) == 400 and len(test) == 200 and not set(trainval) & set(test)
    assert sorted(main.joinpath("train.txt").read_text().split() + main.joinpath("val.txt").read_text().split()) == trainval
    seen = {1: 0, 0: 0, -1: 0}
    for cls in CLASSES:
        lines = main.joinpath(f"{cls}_test.txt").read_text().splitlines()
        assert [ln.split()[0] for ln in lines] == test
        for line in lines:
            image_id, flag = line.split()
            assert line == f"{image_id} {int(flag):2d}"  # VOC's "%s %2d"
            objs = [o for o in _xml_boxes(main.parent.parent / "Annotations" / f"{image_id}.xml") if o[0] == cls]
            want = -1 if not objs else (1 if any(o[2] == "0" for o in objs) else 0)
            assert int(flag) == want
            seen[want] += 1
    assert all(seen.values())  # present, absent and only-difficult all occur


def test_coco_json_loads_with_pycocotools_and_matches_voc(root):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    for split, ids_file in (("train", "trainval"), ("val", "test")):
        coco = COCO(str(root / "coco" / "annotations" / f"instances_{split}.json"))
        ids = (root / "VOCdevkit/VOC2007/ImageSets/Main" / f"{ids_file}.txt").read_text().split()
        assert sorted(coco.getImgIds()) == [int(i) for i in ids]
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
        for image_id in ids[::25]:
            info = coco.loadImgs(int(image_id))[0]
            assert (root / "coco" / split / info["file_name"]).read_bytes() == \
                (root / "VOCdevkit/VOC2007/JPEGImages" / f"{image_id}.jpg").read_bytes()
            anns = coco.loadAnns(coco.getAnnIds(imgIds=int(image_id)))
            voc = _xml_boxes(root / "VOCdevkit/VOC2007/Annotations" / f"{image_id}.xml")
            assert len(anns) == len(voc)
            for ann, (name, (x0, y0, x1, y1), difficult, _, _) in zip(anns, voc):
                assert coco.loadCats(ann["category_id"])[0]["name"] == name
                assert ann["bbox"] == [x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1]
                assert ann["iscrowd"] == 0 and str(ann["difficult"]) == difficult
                rle = ann["segmentation"]
                assert mask_utils.area(rle) == ann["area"]
                assert mask_utils.toBbox(rle).tolist() == ann["bbox"]


def test_transfer_readers_read_the_embedded_scenes(root):
    from transfer.readers import coco as coco_reader, voc as voc_reader

    devkit = root / "VOCdevkit"
    assert voc_reader.voc_classes(devkit, 2007) == CLASSES
    for split, coco_split in (("trainval", "train"), ("test", "val")):
        images = voc_reader.read_voc(devkit, 2007, split)
        ids, from_lists = voc_reader.read_voc_imageset_labels(devkit, 2007, split)
        assert [im.id for im in images] == ids
        np.testing.assert_array_equal(voc_reader.voc_image_labels(images, CLASSES), from_lists)
        coco = coco_reader.read_coco(root / "coco/annotations" / f"instances_{coco_split}.json", root / "coco" / coco_split)
        assert [f"{im.id:06d}" for im in coco.images] == ids
        for voc_im, coco_im in zip(images, coco.images):
            assert [(o.name, o.bbox) for o in voc_im.objects] == \
                [(o.name, (int(o.bbox[0]) + 1, int(o.bbox[1]) + 1, int(o.bbox[0] + o.bbox[2]), int(o.bbox[1] + o.bbox[3])))
                 for o in coco_im.objects]


def test_embedded_root_is_cached_and_resolve_data(root, tmp_path):
    stamp = (root / "manifest.json").stat().st_mtime_ns
    assert embedded.embedded_root() == root and (root / "manifest.json").stat().st_mtime_ns == stamp
    assert embedded.resolve_data("embedded") == root
    assert embedded.resolve_data(str(tmp_path)) == tmp_path.resolve()
    with pytest.raises(DataError, match="does-not-exist"):
        embedded.resolve_data(str(tmp_path / "does-not-exist"))


@pytest.fixture
def tiny_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HEXA_DATA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cache, "DEFAULT_SPEC", TINY)  # what embedded_root() builds
    return tmp_path / "home"


def test_losing_a_race_uses_the_winners_copy(tiny_home, monkeypatch):
    """Without a lock, another process may rename its copy into place first: ours is discarded."""
    import contextlib

    monkeypatch.setattr(cache, "_build_lock", lambda home: contextlib.nullcontext())
    real_generate = embedded.generate
    winner = {}

    def racing_generate(dest, spec):
        winner.update(real_generate(tiny_home / embedded.FOLDER_NAME, spec))  # the other process finishes first
        return real_generate(dest, spec)

    monkeypatch.setattr(cache, "generate", racing_generate)
    root = embedded.embedded_root()
    assert root == tiny_home / embedded.FOLDER_NAME
    assert embedded.read_manifest(root)["fingerprint"] == winner["fingerprint"]
    assert sorted(p.name for p in tiny_home.iterdir()) == [embedded.FOLDER_NAME]  # our temporary copy is gone


def _build_in_child(queue):
    root = embedded.embedded_root()
    queue.put((str(root), embedded.read_manifest(root)["fingerprint"], embedded.read_manifest(root)["generator"]))


def test_concurrent_processes_share_one_copy(tiny_home, monkeypatch):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # children inherit the tiny spec patched in
    builds = tiny_home.parent / "builds.log"
    real_generate = embedded.generate

    def counting_generate(dest, spec):
        with open(builds, "a") as f:
            f.write(f"{dest}\n")
        return real_generate(dest, spec)

    monkeypatch.setattr(cache, "generate", counting_generate)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(queue,)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(set(results)) == 1 and results[0][0] == str(tiny_home / embedded.FOLDER_NAME)
    names = sorted(p.name for p in tiny_home.iterdir())
    assert names == [f".{embedded.FOLDER_NAME}.lock", embedded.FOLDER_NAME]  # one copy, no temporary folders left
    assert len(builds.read_text().splitlines()) == 1  # the lock made the others wait, not rebuild


def test_stale_or_foreign_folders(tiny_home):
    root = embedded.embedded_root()
    manifest = embedded.read_manifest(root)
    (root / "manifest.json").write_text(json.dumps({**manifest, "generator": "older-code"}))
    assert embedded.embedded_root() == root
    assert embedded.read_manifest(root)["generator"] == manifest["generator"]  # regenerated
    (root / "manifest.json").unlink()
    with pytest.raises(DataError, match="not a copy of the embedded dataset"):
        embedded.embedded_root()
