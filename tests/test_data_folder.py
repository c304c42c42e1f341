"""ImageFolderDataset and collate_skipping_bad on fixture trees with awkward images."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hexa_zoo.data import UNLABELLED, BadImage, ImageFolderDataset, collate_skipping_bad, load_rgb, load_rgb_array
from hexa_zoo.errors import DataError


def _jpeg_bytes(colour=(200, 30, 60), size=(16, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture
def tree(tmp_path) -> Path:
    """cats/: an RGB JPEG (upper-case ImageNet extension) and a grayscale PNG;
    dogs/: a palette PNG with a transparent entry and an RGBA PNG; eels/: a truncated JPEG;
    plus a text file, a hidden file and an empty class folder that must be ignored."""
    root = tmp_path / "train"
    for d in ("cats", "dogs", "eels", "empty"):
        (root / d).mkdir(parents=True)
    (root / "cats" / "n01_0001.JPEG").write_bytes(_jpeg_bytes())
    Image.new("L", (8, 8), 100).save(root / "cats" / "gray.png")
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30, 40, 50, 60] + [0] * (256 * 3 - 9))
    pal.putpixel((0, 0), 2)
    pal.save(root / "dogs" / "palette.png", transparency=0)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (0, 0, 255)
    rgba[0, :, 3] = 255  # first row opaque blue, the rest fully transparent
    Image.fromarray(rgba, "RGBA").save(root / "dogs" / "rgba.png")
    full = _jpeg_bytes(size=(64, 64))
    (root / "eels" / "broken.jpg").write_bytes(full[: len(full) // 2])
    (root / "eels" / "notes.txt").write_text("not an image")
    (root / "eels" / ".hidden.jpg").write_bytes(b"junk")
    return root


def test_classes_samples_and_conversion_to_rgb(tree):
    ds = ImageFolderDataset(tree)
    assert ds.classes == ["cats", "dogs", "eels"]  # sorted; the empty folder is ignored
    names = [(Path(p).parent.name, Path(p).name, t) for p, t in ds.samples]
    assert names == [("cats", "gray.png", 0), ("cats", "n01_0001.JPEG", 0),
                     ("dogs", "palette.png", 1), ("dogs", "rgba.png", 1), ("eels", "broken.jpg", 2)]
    assert ds.targets == [0, 0, 1, 1, 2] and ds.class_to_idx == {"cats": 0, "dogs": 1, "eels": 2}

    img, target, index = ds[0]
    assert img.mode == "RGB" and np.asarray(img)[0, 0].tolist() == [100, 100, 100] and (target, index) == (0, 0)
    img, _, _ = ds[1]
    assert img.mode == "RGB" and np.abs(np.asarray(img, dtype=int)[5, 5] - [200, 30, 60]).max() <= 4
    pal = np.asarray(ds[2][0])
    assert pal[0, 0].tolist() == [40, 50, 60] and pal[1, 1].tolist() == [10, 20, 30]
    rgba = np.asarray(ds[3][0])
    assert rgba[0, 0].tolist() == [0, 0, 255] and rgba[2, 2].tolist() == [255, 255, 255]  # transparent -> white

    bad = ds[4]
    assert isinstance(bad, BadImage) and bad.path == str(tree / "eels" / "broken.jpg")
    assert "truncated" in bad.reason.lower() or "OSError" in bad.reason


def test_sixteen_bit_grayscale_is_rescaled(tmp_path):
    Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)).save(tmp_path / "deep.png")
    img = ImageFolderDataset(tmp_path)[0][0]
    assert np.asarray(img)[0, :, 0].tolist() == [0, 128, 255]


def test_dataloader_workers_skip_and_report_bad_images(tree):
    from torch.utils.data import DataLoader
    from torchvision.transforms import v2

    to_tensor = v2.Compose([v2.ToImage(), v2.Resize((8, 8), antialias=True), v2.ToDtype(torch.float32, scale=True)])

    def two_views(img):
        return [to_tensor(img), to_tensor(img).flip(-1)]

    ds = ImageFolderDataset(tree, transform=two_views)
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_skipping_bad,
                        multiprocessing_context="fork")
    seen, bad = [], []
    for views, targets, indices, bad_paths in loader:
        assert isinstance(views, list) and len(views) == 2 and views[0].shape == (len(indices), 3, 8, 8)
        assert torch.equal(views[1], views[0].flip(-1))
        assert targets.tolist() == [ds.targets[i] for i in indices.tolist()]
        seen += indices.tolist()
        bad += bad_paths
    assert seen == [0, 1, 2, 3] and bad == [str(tree / "eels" / "broken.jpg")]


def test_the_array_loader_decodes_as_pil_does(tree, tmp_path):
    """load_rgb_array (simplejpeg for JPEGs) gives PIL's RGB bytes for every mode; broken files still fail."""
    photo = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for mode in ("RGB", "L", "CMYK"):  # CMYK is not simplejpeg's: it goes through PIL
        Image.fromarray(photo).convert(mode).save(tmp_path / f"{mode}.jpg", quality=90)
    files = [tmp_path / f"{m}.jpg" for m in ("RGB", "L", "CMYK")] + [
        tree / "cats" / "n01_0001.JPEG", tree / "cats" / "gray.png", tree / "dogs" / "palette.png",
        tree / "dogs" / "rgba.png"]
    for path in files:
        array = load_rgb_array(path)
        assert array.dtype == np.uint8 and array.shape[2] == 3
        assert np.array_equal(array, np.asarray(load_rgb(path))), path.name
    with pytest.raises(Exception, match="(?i)truncated|premature|broken"):
        load_rgb_array(tree / "eels" / "broken.jpg")
    ds = ImageFolderDataset(tree, loader=load_rgb_array)
    bad = [item for item in (ds[i] for i in range(len(ds))) if isinstance(item, BadImage)]
    assert [b.path for b in bad] == [str(tree / "eels" / "broken.jpg")]


def test_collate_of_an_all_bad_batch():
    images, targets, indices, bad = collate_skipping_bad([BadImage("a.jpg", "x"), BadImage("b.jpg", "y")])
    assert images is None and targets.numel() == 0 and indices.numel() == 0 and bad == ["a.jpg", "b.jpg"]


def test_flat_folder(tmp_path):
    for i, value in enumerate((10, 20, 30)):
        Image.new("RGB", (4, 4), (value, value, value)).save(tmp_path / f"{i}.png")
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == [UNLABELLED] and ds.targets == [0, 0, 0] and len(ds) == 3
    assert [np.asarray(ds[i][0])[0, 0, 0] for i in range(3)] == [10, 20, 30]


def test_folders_without_usable_images_are_errors(tmp_path):
    with pytest.raises(DataError, match="empty-one.*no images"):
        (tmp_path / "empty-one" / "sub").mkdir(parents=True)
        (tmp_path / "empty-one" / "readme.txt").write_text("hi")
        ImageFolderDataset(tmp_path / "empty-one")
    with pytest.raises(DataError, match="missing-one.*does not exist"):
        ImageFolderDataset(tmp_path / "missing-one")
    mixed = tmp_path / "mixed"
    (mixed / "cls").mkdir(parents=True)
    Image.new("RGB", (2, 2)).save(mixed / "cls" / "a.png")
    Image.new("RGB", (2, 2)).save(mixed / "loose.png")
    with pytest.raises(DataError, match="mixes images"):
        ImageFolderDataset(mixed)
