"""Many-shot linear transfer: dataset readers on fixtures in each real on-disk format, the metrics against
independent computations, the fast C sweep against scikit-learn's, and a run end to end."""

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hexa_zoo.errors import DataError
from transfer import metrics
from transfer.protocols import manyshot
from transfer.protocols.manyshot.logreg_sweep import fast_sweep, sklearn_sweep, ssl_transfer_costs
from transfer.readers.manyshot import read_manyshot, split_validation


def _jpg(path: Path, rng, size=(40, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def dtd_root(tmp_path_factory):
    return make_dtd(tmp_path_factory.mktemp("dtd"))


def make_dtd(root: Path) -> Path:
    """DTD's layout: dtd/dtd/images/<class>/<image>.jpg and labels/{train,val,test}1.txt (3 classes, 6/3/3)."""
    rng = np.random.default_rng(0)
    base = root / "dtd" / "dtd"
    for split, n in (("train", 6), ("val", 3), ("test", 3)):
        lines = []
        for cls in ("banded", "dotted", "striped"):
            for i in range(n):
                name = f"{cls}_{split}{i:03d}.jpg"
                _jpg(base / "images" / cls / name, rng)
                lines.append(f"{cls}/{name}")
        (base / "labels").mkdir(parents=True, exist_ok=True)
        (base / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")
    return root


def test_cifar10_batches_are_read_from_their_pickles(tmp_path):
    rng = np.random.default_rng(0)
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 255, (4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        batches[name] = (data, labels)
        with open(base / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data, "filenames": ["x.png"] * 4}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072}, f)
    data = read_manyshot("cifar10", tmp_path)
    assert data.metric == "top1" and data.val is None and data.classes == [f"c{i}" for i in range(10)]
    assert len(data.train.labels) == 20 and len(data.test.labels) == 4
    first, labels = batches["data_batch_1"]
    np.testing.assert_array_equal(data.train.images.arrays[0], first[0].reshape(3, 32, 32).transpose(1, 2, 0))
    assert data.train.labels[:4].tolist() == labels
    # A batch that would build anything but arrays is refused, not unpickled.
    with open(base / "test_batch", "wb") as f:
        pickle.dump({"data": Path("/")}, f)
    with pytest.raises(DataError, match="not a CIFAR python batch"):
        read_manyshot("cifar10", tmp_path)


def test_dtd_flowers_pets_readers(dtd_root, tmp_path):
    from scipy.io import savemat

    dtd = read_manyshot("dtd", dtd_root)
    assert dtd.classes == ["banded", "dotted", "striped"] and dtd.metric == "top1"
    assert [len(s.labels) for s in (dtd.train, dtd.val, dtd.test)] == [18, 9, 9]
    assert dtd.train.images[0].name == "banded_train000.jpg" and dtd.train.labels[-1] == 2

    rng = np.random.default_rng(1)
    flowers = tmp_path / "flowers" / "flowers-102"
    labels = np.array([1, 2, 3, 1, 2, 3, 1, 2, 3, 3])
    for i in range(1, 11):
        _jpg(flowers / "jpg" / f"image_{i:05d}.jpg", rng)
    savemat(flowers / "imagelabels.mat", {"labels": labels[None]})
    savemat(flowers / "setid.mat", {"trnid": np.array([[1, 2, 3]]), "valid": np.array([[4, 5, 6]]),
                                    "tstid": np.array([[7, 8, 9, 10]])})
    data = read_manyshot("flowers", tmp_path / "flowers")
    assert data.metric == "mean_per_class" and data.test.labels.tolist() == [0, 1, 2, 2]
    assert data.test.images[-1].name == "image_00010.jpg"

    pets = tmp_path / "pets" / "oxford-iiit-pet"
    (pets / "annotations").mkdir(parents=True)
    for split, ids in (("trainval", [1, 2]), ("test", [3])):
        lines = []
        for breed, label, species in (("Abyssinian", 1, 1), ("american_bulldog", 2, 2)):
            for i in ids:
                _jpg(pets / "images" / f"{breed}_{i}.jpg", rng)
                lines.append(f"{breed}_{i} {label} {species} 1")
        (pets / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    data = read_manyshot("pets", tmp_path / "pets")
    assert data.classes == ["Abyssinian", "American Bulldog"] and data.val is None
    assert data.train.labels.tolist() == [0, 0, 1, 1] and data.test.images[1].name == "american_bulldog_3.jpg"


def test_a_missing_dataset_names_its_layout_and_source(tmp_path):
    with pytest.raises(DataError) as info:
        read_manyshot("food", tmp_path)
    assert "food-101/{images" in info.value.message and "ethz" in info.value.fix
    with pytest.raises(DataError, match="caltech101/101_ObjectCategories"):
        read_manyshot("caltech101", tmp_path)


def test_caltech101_reads_the_ssl_transfer_split_lists(tmp_path):
    rng = np.random.default_rng(2)
    images = tmp_path / "caltech101" / "101_ObjectCategories"
    for cls in ("BACKGROUND_Google", "Faces"):
        for i in (1, 2):
            _jpg(images / cls / f"image_{i:04d}.jpg", rng)
    (tmp_path / "train.txt").write_text("BACKGROUND_Google/image_0001.jpg 0\nFaces/image_0001.jpg 1\n")
    (tmp_path / "test.txt").write_text("BACKGROUND_Google/image_0002.jpg 0\nFaces/image_0002.jpg 1\n")
    data = read_manyshot("caltech101", tmp_path)
    assert data.classes == ["BACKGROUND_Google", "Faces"] and data.metric == "mean_per_class"
    assert data.test.images[1] == images / "Faces" / "image_0002.jpg"


def test_validation_split_is_ssl_transfers_seeded_shuffle():
    fit, val = split_validation(10, 0.2, 0)
    indices = list(range(10))
    np.random.seed(0)
    np.random.shuffle(indices)
    assert val.tolist() == indices[:2] and fit.tolist() == indices[2:]


def test_metrics_against_independent_computations():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    labels, decision = rng.integers(0, 5, 200), rng.normal(size=(200, 5))
    assert metrics.mean_per_class_accuracy(labels, decision) == pytest.approx(
        100 * balanced_accuracy_score(labels, decision.argmax(1)))
    # 11-point AP by hand: ranked scores give precision/recall; P = 2 positives among 4.
    y, s = np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])
    # ranks: TP (p=1, r=.5), FP (p=.5, r=.5), TP (p=2/3, r=1), FP: best precision at recall >= t:
    # t <= 0.5 -> 1, t > 0.5 -> 2/3 (6 thresholds 0..0.5 and 5 thresholds 0.6..1)
    assert metrics.eleven_point_ap(y, s) == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def test_fast_sweep_chooses_the_c_of_the_serial_scikit_learn_sweep():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    y_train, y_val = rng.integers(0, 4, 120), rng.integers(0, 4, 80)
    x_train = centres[y_train] + 1.5 * rng.normal(size=(120, 16))
    x_val = centres[y_val] + 1.5 * rng.normal(size=(80, 16))
    costs = ssl_transfer_costs(45)[18:34:3]  # C from ~100 down to ~0.004: where the fits converge
    ours, best = fast_sweep(x_train, y_train, x_val, y_val, costs, metrics.top1_accuracy, 4)
    ref, ref_best = sklearn_sweep(x_train, y_train, x_val, y_val, costs, metrics.top1_accuracy)
    assert best == ref_best
    np.testing.assert_allclose(ours, ref, atol=1.3)  # at most one of 80 images apart
    # VOC2007's per-class binary fits: the same check with a multi-label target.
    Y_train = (rng.random((120, 3)) < 0.4).astype(np.int64)
    Y_val = (rng.random((80, 3)) < 0.4).astype(np.int64)
    xt, xv = Y_train @ rng.normal(size=(3, 16)) + rng.normal(size=(120, 16)), Y_val @ rng.normal(size=(3, 16))
    ours, best = fast_sweep(xt, Y_train, xv, Y_val, costs, metrics.mean_ap, 3, multilabel=True)
    ref, ref_best = sklearn_sweep(xt, Y_train, xv, Y_val, costs, metrics.mean_ap, multilabel=True)
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_manyshot_end_to_end_on_dtd(dtd_root, r18_file, tmp_path, monkeypatch):
    monkeypatch.setenv("HEXA_FEATURE_CACHE", str(tmp_path / "cache"))
    record = manyshot.run(str(r18_file), str(dtd_root), tmp_path / "out", preset="paper",
                          overrides=["dataset=dtd", "resize=32", "crop=32", "wd_values=5"])
    assert record["benchmark"] == "dtd_manyshot" and record["protocol"] == "manyshot"
    m = record["metrics"]["top1"]
    assert 0 <= m["mean"] <= 100 and m["C"] in ssl_transfer_costs(5)
    assert record["dataset"]["splits"] == {"train": 18, "val": 9, "test": 9}
    assert "official validation split" in record["notes"][0]
    # the record compiles into the many-shot table, a column per dataset, beside ssl-transfer's rows
    from leaderboards.compiler import compile_leaderboard

    table = compile_leaderboard([tmp_path / "out"], tmp_path / "board", plots=False).tables["manyshot"]
    assert table[table["kind"] == "ours"]["dtd top1"].tolist() == [pytest.approx(m["mean"])]
    assert "DeepCluster-v2" in set(table["model"])


# ------------------------------------------------------------------------------ cross-domain few-shot

def test_prototype_classifier_against_a_hand_computation():
    from transfer.protocols import fewshot

    feats = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [12.0, 10.0], [1.2, 0.0], [10.0, 9.0], [6.5, 5.0]])
    ep = fewshot.Episode(support=np.array([0, 1, 2, 3]), support_labels=np.array([0, 0, 1, 1]),
                         query=np.array([4, 5, 6]), query_labels=np.array([0, 1, 0]), classes=np.array([7, 9]))
    cfg = fewshot.PRESETS["cdfsl"]
    # Prototypes (1, 0) and (11, 10); the third query (6.5, 5) is 5.5^2 + 5^2 from the first and
    # 4.5^2 + 5^2 from the second: class 1, wrong. Unnormalised features, as ssl-transfer's ProtoNet.
    assert fewshot.classify_episode(feats, ep, "centroid", cfg) == pytest.approx(200 / 3)
    values = [60.0, 70.0, 80.0]
    assert fewshot.confidence95(values, cfg.ci_ddof) == pytest.approx(1.96 * np.std(values) / np.sqrt(3))


def test_cdfsl_layouts_are_recognised_and_run_end_to_end(r18_file, tmp_path, monkeypatch):
    from transfer.protocols import fewshot
    from transfer.readers.cdfsl import read_cdfsl

    rng = np.random.default_rng(0)
    eurosat = tmp_path / "EuroSAT"
    for c in range(5):
        for i in range(22):
            _jpg(eurosat / "2750" / f"Class{c}" / f"{i}.jpg", rng, size=(24, 24))
    name, images = read_cdfsl(eurosat)
    assert name == "eurosat" and len(images.classes) == 5 and len(images.paths) == 110

    isic = tmp_path / "ISIC"
    (isic / "ISIC2018_Task3_Training_GroundTruth").mkdir(parents=True)
    rows = ["image,MEL,NV,BCC,AKIEC,BKL,DF,VASC"]
    for i, label in enumerate([1, 0, 6]):
        _jpg(isic / "ISIC2018_Task3_Training_Input" / f"ISIC_{i:07d}.jpg", rng, size=(8, 8))
        rows.append(f"ISIC_{i:07d}," + ",".join("1.0" if j == label else "0.0" for j in range(7)))
    (isic / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv").write_text(
        "\n".join(rows) + "\n")
    name, images = read_cdfsl(isic)
    assert name == "isic" and images.labels.tolist() == [1, 0, 6] and images.classes[6] == "VASC"

    chestx = tmp_path / "ChestX"
    entries = [("a.png", "Mass"), ("b.png", "No Finding"), ("c.png", "Effusion|Mass"), ("d.png", "Pneumonia"),
               ("e.png", "Nodule")]
    for n, _ in entries:
        _jpg(chestx / "images" / n, rng, size=(8, 8))
    (chestx / "Data_Entry_2017.csv").write_text("Image Index,Finding Labels,Follow-up #\n" +
                                                "".join(f"{n},{f},0\n" for n, f in entries))
    name, images = read_cdfsl(chestx)
    assert name == "chestx" and [p.name for p in images.paths] == ["a.png", "e.png"]
    assert images.labels.tolist() == [4, 5]
    with pytest.raises(DataError, match="not a CD-FSL dataset"):
        read_cdfsl(tmp_path / "pets" if (tmp_path / "pets").exists() else tmp_path)

    monkeypatch.setenv("HEXA_FEATURE_CACHE", str(tmp_path / "cache"))
    record = fewshot.run(str(r18_file), str(eurosat), tmp_path / "out", preset="cdfsl",
                         overrides=["shots=[5]", "episodes=20", "resize=37", "crop=32"])
    assert record["benchmark"] == "eurosat_cdfsl"
    m = record["metrics"]["acc_5w5s_centroid"]
    assert m["n"] == 20 and m["ci95"] == pytest.approx(1.96 * np.std(m["values"]) / np.sqrt(20))
    # the cdfsl preset is ssl-transfer's protocol: its record sits beside ssl-transfer's published rows
    from leaderboards.compiler import compile_leaderboard

    table = compile_leaderboard([tmp_path / "out"], tmp_path / "board", plots=False).tables["cdfsl"]
    ours = table[table["kind"] == "ours"]
    assert ours["eurosat acc_5w5s_centroid"].tolist() == [pytest.approx(m["mean"])]
    assert ours["eurosat acc_5w5s_centroid_ci95"].tolist() == [pytest.approx(m["ci95"])]
    assert set(table["protocol"]) == {"ssl-transfer-fewshot"} and "DeepCluster-v2" in set(table["model"])


def test_finetune_grid_is_ssl_transfers():
    from transfer.protocols.finetune import PRESETS, grid

    pairs = grid(PRESETS["paper"])
    assert len(pairs) == 20 and pairs[0] == (pytest.approx(0.1), 0.0)
    assert pairs[1] == (pytest.approx(0.1), pytest.approx(1e-6 / 0.1))
    assert pairs[-1] == (pytest.approx(1e-4), pytest.approx(1e-3 / 1e-4))
