"""The four CD-FSL datasets (Guo et al. 2020) in their released layouts, as ssl-transfer's `datasets/` read them.

- CropDiseases: `dataset/train/<class>/<image>` (ImageFolder);
- EuroSAT: `2750/<class>/<image>` (ImageFolder);
- ISIC 2018 task 3: `ISIC2018_Task3_Training_Input/<id>.jpg` and
  `ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv` (one-hot columns; the label
  is the first non-zero one);
- ChestX-ray14: `images/<name>.png` and `Data_Entry_2017.csv`, keeping images with one finding among seven
  (Atelectasis, Cardiomegaly, Effusion, Infiltration, Mass, Nodule, Pneumothorax; "No Finding" and
  Pneumonia are left out, as CD-FSL does).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from hexa_zoo.errors import DataError

from .images import LabeledImages, read_image_split

CHESTX_CLASSES = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumothorax")
ISIC_GROUND_TRUTH = "ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv"
EXPECTED = ("CropDiseases dataset/train/<class>/, EuroSAT 2750/<class>/, ISIC ISIC2018_Task3_Training_Input/ with "
            f"{ISIC_GROUND_TRUTH}, or ChestX images/ with Data_Entry_2017.csv")
SOURCE = "the CD-FSL benchmark's links (github.com/IBM/cdfsl-benchmark, 'Datasets')"


def _csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return [row for row in csv.reader(f)][1:]  # the header row is skipped, as pandas' skiprows=[0]


def _from_table(name: str, root: Path, folder: str, names: list[str], labels: list[int], classes) -> LabeledImages:
    paths = [root / folder / n for n in names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{name}: {len(missing)} image(s) listed in its table are missing, e.g. {missing[0]}",
                        "extract the whole release into --data")
    return LabeledImages(paths, np.asarray(labels, dtype=np.int64), list(classes), root)


def read_cdfsl(root: Path) -> tuple[str, LabeledImages]:
    """(dataset name, its images) for the CD-FSL dataset at `root`, recognised by its layout."""
    if (root / "dataset" / "train").is_dir():
        return "cropdiseases", read_image_split(root / "dataset", "train")
    if (root / "2750").is_dir():
        return "eurosat", read_image_split(root, "2750")
    if root.name == "2750" and root.is_dir():  # the folder CD-FSL's own configuration names (EuroSAT_path)
        return "eurosat", read_image_split(root.parent, "2750")
    if (root / ISIC_GROUND_TRUTH).is_file():
        rows = _csv_rows(root / ISIC_GROUND_TRUTH)
        header = next(csv.reader(open(root / ISIC_GROUND_TRUTH, newline="")))[1:]
        onehot = np.asarray([[float(v) for v in row[1:]] for row in rows])
        return "isic", _from_table("isic", root, "ISIC2018_Task3_Training_Input", [f"{r[0]}.jpg" for r in rows],
                                   list((onehot != 0).argmax(axis=1)), header)
    if (root / "Data_Entry_2017.csv").is_file():
        index = {c: i for i, c in enumerate(CHESTX_CLASSES)}
        names, labels = [], []
        for row in _csv_rows(root / "Data_Entry_2017.csv"):
            findings = row[1].split("|")
            if len(findings) == 1 and findings[0] in index:
                names.append(row[0])
                labels.append(index[findings[0]])
        return "chestx", _from_table("chestx", root, "images", names, labels, CHESTX_CLASSES)
    raise DataError(f"{root} is not a CD-FSL dataset folder; expected {EXPECTED}", f"download it from {SOURCE}")
