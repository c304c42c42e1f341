"""Readers of the 11 many-shot transfer datasets in their real on-disk layouts (ssl-transfer's splits).

Where torchvision has a reader that does not insist on the official archives' md5 sums, it reads the files
(`download=False`): FGVC-Aircraft, Stanford Cars, DTD, Food-101, Oxford-IIIT Pets. CIFAR's pickled
batches are read by a restricted unpickler (numpy arrays and builtins only; torchvision's reader also checks
the archive's md5). Flowers-102's `.mat` files are read with scipy (torchvision checks their md5 too).
Caltech101 and SUN397 have no official split: their split lists are given by path, as the SimCLR lists are
(ssl-transfer's `caltech101-splits/{train,test}.txt`; SUN397's `Training_01.txt`/`Testing_01.txt`).
VOC2007 is read from its VOCdevkit per-class lists.

Splits, as ssl-transfer's `linear.py`: Aircraft, DTD, Flowers and VOC2007 have an official validation split;
the others take a seeded 20% of train for choosing C (`split_validation`). A missing dataset raises a
DataError naming the layout expected and where to get it.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from hexa_zoo.errors import ConfigError, DataError

from ..features import ArrayImages


@dataclass(frozen=True)
class Split:
    images: list[Path] | ArrayImages   # image files, or images held in memory (CIFAR)
    labels: np.ndarray                 # (N,) class indices; (N, C) 0/1 for VOC2007's multi-label task


@dataclass(frozen=True)
class ManyShotData:
    name: str
    classes: list[str]
    metric: str                        # "top1", "mean_per_class" or "mAP"
    train: Split
    val: Split | None                  # None: a seeded 20% of train is held out
    test: Split
    files: list[Path]                  # every file read (the data fingerprint)


@dataclass(frozen=True)
class Layout:
    reader: Callable
    metric: str
    expected: str                      # the layout under --data, for the error message
    source: str                        # where to get it


def _missing(name: str, root: Path, what: Path | str) -> DataError:
    return _layout_error(name, f"{what} not found under {root}")


def _layout_error(name: str, problem: str) -> DataError:
    """`problem` with the layout dataset `name` expects and where to get it."""
    layout = LAYOUTS[name]
    return DataError(f"{name}: {problem}; expected {layout.expected}",
                     f"download {name} from {layout.source} and pass --data the folder described")


def _paths_split(paths, labels) -> Split:
    return Split([Path(p) for p in paths], np.asarray(labels, dtype=np.int64))


# ---------------------------------------------------------------------------------- torchvision readers

def _torchvision(name: str, root: Path, make: Callable, splits: tuple[str, ...]) -> tuple[list, list[Split]]:
    """torchvision's reader for each split (download=False): (classes, splits), every split labelled by the
    first split's class names (torchvision's DTD and Pets name only the classes a split's list holds)."""
    out, classes = [], None
    for split in splits:
        try:
            ds = make(str(root), split)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted ..."
            raise _missing(name, root, f"the {split} split ({err})") from None
        files = getattr(ds, "_image_files", None) or getattr(ds, "_images", None)
        if files is not None:
            labels = ds._labels
        elif hasattr(ds, "_samples"):  # StanfordCars
            files, labels = zip(*ds._samples) if ds._samples else ((), ())
        else:
            raise ConfigError(f"this torchvision's {type(ds).__name__} no longer exposes its file list",
                              "use torchvision 0.29 (pinned in the Makefile)")
        classes = classes or list(ds.classes)
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted({ds.classes[t] for t in labels} - set(index))
        if unknown:
            raise DataError(f"{name}: the {split} split has classes {unknown[:3]} that {splits[0]} lacks",
                            "use the split files of one release of the dataset")
        out.append(_paths_split(files, [index[ds.classes[t]] for t in labels]))
    return classes, out


def read_aircraft(root: Path):
    from torchvision.datasets import FGVCAircraft

    classes, (train, val, test) = _torchvision("aircraft", root, lambda r, s: FGVCAircraft(
        r, split=s, annotation_level="variant", download=False), ("train", "val", "test"))
    return classes, train, val, test


def read_cars(root: Path):
    from torchvision.datasets import StanfordCars

    classes, (train, test) = _torchvision("cars", root, lambda r, s: StanfordCars(r, split=s, download=False),
                                          ("train", "test"))
    return classes, train, None, test


def read_dtd(root: Path):
    from torchvision.datasets import DTD

    classes, (train, val, test) = _torchvision("dtd", root, lambda r, s: DTD(r, split=s, partition=1,
                                                                            download=False), ("train", "val", "test"))
    return classes, train, val, test


def read_food(root: Path):
    from torchvision.datasets import Food101

    classes, (train, test) = _torchvision("food", root, lambda r, s: Food101(r, split=s, download=False),
                                          ("train", "test"))
    return classes, train, None, test


def read_pets(root: Path):
    from torchvision.datasets import OxfordIIITPet

    classes, (train, test) = _torchvision("pets", root, lambda r, s: OxfordIIITPet(r, split=s, download=False),
                                          ("trainval", "test"))
    return classes, train, None, test


# ------------------------------------------------------------------------------------------ CIFAR

class _ArraysOnly(pickle.Unpickler):
    """CIFAR's batches are pickled dicts of bytes, lists and numpy arrays: nothing else may be built."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")


def _cifar_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return _ArraysOnly(io.BytesIO(f.read()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise DataError(f"{path} is not a CIFAR python batch ({err})", "re-extract the python version archive") from None


def _read_cifar(name: str, root: Path, folder: str, train_files: list[str], test_files: list[str],
                label_key: str, meta: tuple[str, str]):
    base = root / folder if (root / folder).is_dir() else root
    files = []

    def load(names, split):
        arrays, labels = [], []
        for n in names:
            path = base / n
            if not path.is_file():
                raise _missing(name, root, path.relative_to(root) if path.is_relative_to(root) else path)
            batch = _cifar_batch(path)
            arrays.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels += list(batch[label_key])
            files.append(path)
        images = np.concatenate(arrays)
        return Split(ArrayImages(images, [f"{split}/{i}" for i in range(len(images))]), np.asarray(labels, np.int64))

    train, test = load(train_files, "train"), load(test_files, "test")
    meta_path = base / meta[0]
    classes = list(_cifar_batch(meta_path)[meta[1]]) if meta_path.is_file() else [str(c) for c in
                                                                                  range(int(train.labels.max()) + 1)]
    return classes, train, None, test, files


def read_cifar10(root: Path):
    return _read_cifar("cifar10", root, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                       ["test_batch"], "labels", ("batches.meta", "label_names"))


def read_cifar100(root: Path):
    return _read_cifar("cifar100", root, "cifar-100-python", ["train"], ["test"], "fine_labels",
                       ("meta", "fine_label_names"))


# ------------------------------------------------------------------------------ lists and .mat files

def read_flowers(root: Path):
    from scipy.io import loadmat

    base = root / "flowers-102" if (root / "flowers-102").is_dir() else root
    for need in ("setid.mat", "imagelabels.mat", "jpg"):
        if not (base / need).exists():
            raise _missing("flowers", root, need)
    setid, labels = loadmat(base / "setid.mat"), loadmat(base / "imagelabels.mat")["labels"].ravel() - 1

    def split(key):
        ids = np.asarray(setid[key]).ravel()
        return _paths_split([base / "jpg" / f"image_{i:05d}.jpg" for i in ids], labels[ids - 1])

    splits = [split(k) for k in ("trnid", "valid", "tstid")]
    classes = [str(c + 1) for c in range(int(labels.max()) + 1)]
    return (classes, *splits, [base / "setid.mat", base / "imagelabels.mat"])


def _read_list(path: Path, name: str, root: Path) -> list[str]:
    if not path.is_file():
        raise _missing(name, root, path)
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_caltech101(root: Path, train_list: str = "", test_list: str = ""):
    """ssl-transfer's lists: `<class>/<image> <label>` relative to caltech101/101_ObjectCategories."""
    images = next((p for p in (root / "caltech101" / "101_ObjectCategories", root / "101_ObjectCategories")
                   if p.is_dir()), None)
    if images is None:
        raise _missing("caltech101", root, "caltech101/101_ObjectCategories")
    lists = [Path(train_list) if train_list else root / "train.txt", Path(test_list) if test_list else root / "test.txt"]
    splits, names = [], {}
    for path in lists:
        paths, labels = [], []
        for line in _read_list(path, "caltech101", root):
            rel, label = line.rsplit(" ", 1)
            paths.append(images / rel)
            labels.append(int(label))
            names[int(label)] = rel.split("/")[0]
        splits.append(_paths_split(paths, labels))
    classes = [names.get(c, str(c)) for c in range(max(names) + 1)]
    return classes, splits[0], None, splits[1], lists


def read_sun397(root: Path, train_list: str = "", test_list: str = ""):
    """SUN397's partition 01: `/<letter>/<class>/<image>` lines relative to the SUN397 folder."""
    base = root / "SUN397" if (root / "SUN397" / "ClassName.txt").is_file() else root
    classes = sorted(line[3:] for line in _read_list(base / "ClassName.txt", "sun397", root))
    index = {c: i for i, c in enumerate(classes)}
    lists = [Path(train_list) if train_list else base / "Training_01.txt",
             Path(test_list) if test_list else base / "Testing_01.txt"]
    splits = []
    for path in lists:
        lines = _read_list(path, "sun397", root)
        unknown = [ln for ln in lines if os.path.dirname(ln)[3:] not in index]
        if unknown:
            raise DataError(f"{path}: {len(unknown)} line(s) name no class of ClassName.txt, e.g. {unknown[0]!r}",
                            "use the SUN397 partition files that belong to this ClassName.txt")
        splits.append(_paths_split([base / ln.lstrip("/") for ln in lines], [index[os.path.dirname(ln)[3:]]
                                                                             for ln in lines]))
    return classes, splits[0], None, splits[1], lists + [base / "ClassName.txt"]


def read_voc2007(root: Path):
    """VOC2007 train / val / test from the per-class lists; positive = label 1 (difficult counts as absent)."""
    from .voc import read_voc_imageset_labels, voc_classes, voc_year_dir

    devkit = root / "VOCdevkit" if (root / "VOCdevkit").is_dir() else root
    try:
        voc = voc_year_dir(devkit, 2007)
        classes = list(voc_classes(devkit, 2007))
        splits = []
        for split in ("train", "val", "test"):
            ids, labels = read_voc_imageset_labels(devkit, 2007, split, classes)
            splits.append(Split([voc / "JPEGImages" / f"{i}.jpg" for i in ids], (labels == 1).astype(np.int64)))
    except DataError as err:
        raise _missing("voc2007", root, err.message) from None
    return classes, *splits


def read_embedded(root: Path):
    from .images import read_image_split

    base = root / "classify"
    train = read_image_split(base, "train")
    val, test = (read_image_split(base, s, classes=train.classes) for s in ("val", "test"))
    return train.classes, *(_paths_split(s.paths, s.labels) for s in (train, val, test))


LAYOUTS: dict[str, Layout] = {
    "aircraft": Layout(read_aircraft, "mean_per_class", "fgvc-aircraft-2013b/data/images_variant_{train,val,test}.txt "
                       "and data/images/", "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/"),
    "caltech101": Layout(read_caltech101, "mean_per_class", "caltech101/101_ObjectCategories/<class>/ and the split "
                         "lists train.txt, test.txt (or --set train_list=... test_list=...)",
                         "https://data.caltech.edu/records/mzrjq-6wc02 (lists: linusericsson/ssl-transfer "
                         "caltech101-splits/)"),
    "cars": Layout(read_cars, "top1", "stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_train/, "
                   "cars_test_annos_withlabels.mat, cars_test/}", "https://ai.stanford.edu/~jkrause/cars/car_dataset.html"),
    "cifar10": Layout(read_cifar10, "top1", "cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}",
                      "https://www.cs.toronto.edu/~kriz/cifar.html (python version)"),
    "cifar100": Layout(read_cifar100, "top1", "cifar-100-python/{train, test, meta}",
                       "https://www.cs.toronto.edu/~kriz/cifar.html (python version)"),
    "dtd": Layout(read_dtd, "top1", "dtd/dtd/{images/<class>/, labels/{train,val,test}1.txt}",
                  "https://www.robots.ox.ac.uk/~vgg/data/dtd/"),
    "flowers": Layout(read_flowers, "mean_per_class", "flowers-102/{jpg/, imagelabels.mat, setid.mat}",
                      "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"),
    "food": Layout(read_food, "top1", "food-101/{images/<class>/, meta/{train,test}.json}",
                   "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/"),
    "pets": Layout(read_pets, "mean_per_class", "oxford-iiit-pet/{images/, annotations/{trainval,test}.txt}",
                   "https://www.robots.ox.ac.uk/~vgg/data/pets/"),
    "sun397": Layout(read_sun397, "top1", "SUN397/{ClassName.txt, Training_01.txt, Testing_01.txt, <letter>/<class>/}",
                     "https://vision.princeton.edu/projects/2010/SUN/ (partitions: Partitions.zip)"),
    "voc2007": Layout(read_voc2007, "mAP", "VOCdevkit/VOC2007/{JPEGImages/, ImageSets/Main/<class>_{train,val,test}.txt}",
                      "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/"),
    "embedded": Layout(read_embedded, "top1", "the embedded dataset's classify/{train,val,test}", "hexa_zoo.embedded"),
}
WITH_VALIDATION = ("aircraft", "dtd", "flowers", "voc2007", "embedded")


def read_manyshot(name: str, root: Path, *, train_list: str = "", test_list: str = "") -> ManyShotData:
    """Dataset `name` at `root` in its real layout."""
    if name not in LAYOUTS:
        raise ConfigError(f"unknown many-shot dataset {name!r}" if name else "which dataset --data holds is not said",
                          f"pass --dataset NAME, one of: {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise _layout_error(name, f"{root} is not a folder")
    lists = {"train_list": train_list, "test_list": test_list} if name in ("caltech101", "sun397") else {}
    out = LAYOUTS[name].reader(root, **lists)
    classes, train, val, test = out[:4]
    extra = list(out[4]) if len(out) > 4 else []
    files = extra + [p for s in (train, val, test) if s is not None and not isinstance(s.images, ArrayImages)
                     for p in s.images]
    return ManyShotData(name, [str(c) for c in classes], LAYOUTS[name].metric, train, val, test, files)


def split_validation(n: int, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ssl-transfer's held-out validation: indices shuffled by np.random.seed(seed); the first
    floor(fraction * n) are validation, the rest train. Returns (train indices, validation indices)."""
    indices = np.arange(n)
    np.random.RandomState(seed).shuffle(indices)
    split = int(np.floor(fraction * n))
    return indices[split:], indices[:split]
