"""Frozen-feature transfer: metrics, kNN, few-shot, the low-shot SVM, the feature cache, each protocol
end to end on the embedded dataset, and the `hexa transfer` command."""

import argparse
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from hexa_zoo.errors import ConfigError, DataError
from transfer import cli, suite
from transfer.protocols import fewshot, knn, linear, lowshot_svm
from transfer.protocols.lowshot_svm import sampling as lowshot_sampling, svm_solver
from transfer.common import load_model, resolve_config
from transfer.readers.images import read_image_split
from transfer.features import EvalTransform, extract_features
from transfer.metrics import topk_accuracy, voc07_ap, voc07_ap_columns
from transfer.probe import stratified_holdout

# Small and fast: a random resnet18 at 32 px, a few images per class.
TINY = ["resize=32", "crop=32"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "r18.safetensors"
    save_file(timm.create_model("resnet18", num_classes=0).state_dict(), str(path))
    return path


@pytest.fixture(autouse=True)
def _shared_feature_cache(tmp_path_factory, monkeypatch):
    """One feature cache for this module's tests, so protocols on the same model and data share it."""
    monkeypatch.setenv("HEXA_FEATURE_CACHE", str(tmp_path_factory.getbasetemp() / "frozen_feature_cache"))


# ------------------------------------------------------------------------------------------ metrics

def test_voc07_ap_perfect_known_case_and_difficult_ignored():
    labels = np.array([1, -1, 1, -1, -1])
    assert voc07_ap(np.array([5, 1, 4, 2, 3.0]), labels) == pytest.approx(1.0)
    # Ranked +, -, +, -, -: precision 1 at recall 0.5 (thresholds 0..0.5: 6 of 11), 2/3 at recall 1 (5 of 11).
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    assert voc07_ap(scores, labels) == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    assert voc07_ap(scores, labels, eleven_point=False) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # A difficult image ranked first changes nothing; counted as a negative it would.
    with_difficult = (np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5]), np.array([0, 1, -1, 1, -1, -1]))
    assert voc07_ap(*with_difficult) == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert voc07_ap(with_difficult[0], np.where(with_difficult[1] == 0, -1, with_difficult[1])) < 0.8
    assert voc07_ap(scores, -np.ones(5)) == 0.0  # no positives


def test_voc07_ap_columns_equals_per_column():
    rng = np.random.default_rng(0)
    labels = rng.choice([1, -1, 0], size=80, p=[0.3, 0.6, 0.1])
    scores = rng.normal(size=(80, 7)).round(1)  # rounding makes ties
    for eleven in (True, False):
        expected = [voc07_ap(scores[:, j], labels, eleven_point=eleven) for j in range(7)]
        np.testing.assert_allclose(voc07_ap_columns(scores, labels, eleven_point=eleven), expected)


def test_topk_accuracy():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    acc = topk_accuracy(logits, torch.tensor([2, 0, 0]), ks=(1, 2, 5))
    assert acc[1] == pytest.approx(100 / 3) and acc[2] == pytest.approx(200 / 3) and acc[5] == 100.0


# ---------------------------------------------------------------------------------------------- kNN

def _brute_force_knn(train, labels, test, num_classes, k, t):
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    out = np.zeros((len(test), num_classes))
    for q, x in enumerate(test):
        sims = train @ (x / np.linalg.norm(x))
        for j in np.argsort(-sims)[:k]:
            out[q, labels[j]] += math.exp(sims[j] / t)
    return out


def test_knn_matches_brute_force_across_chunks():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(53, 8)), rng.normal(size=(19, 8))
    labels = rng.integers(0, 4, size=53)
    scores = knn.knn_predict(torch.from_numpy(train), torch.from_numpy(labels), torch.from_numpy(test), 4,
                             ks=(5, 20, 100), temperature=0.07, chunk_size=7)
    for k in (5, 20, 100):
        expected = _brute_force_knn(train, labels, test, 4, min(k, 53), 0.07)
        np.testing.assert_allclose(scores[k].numpy(), expected, rtol=1e-4)


# ------------------------------------------------------------------------------------------ few-shot

def test_fewshot_confidence_interval_formula():
    values = [50.0, 60.0, 70.0, 80.0]
    std = math.sqrt(sum((v - 65) ** 2 for v in values) / 3)
    assert fewshot.confidence95(values) == pytest.approx(1.96 * std / 2)


def test_fewshot_episode_sampler():
    labels = np.repeat(np.arange(8), 12)
    labels = np.concatenate([labels, [8] * 5])  # class 8 is too small for 2 + 10
    rng = np.random.default_rng(0)
    for _ in range(20):
        ep = fewshot.sample_episode(labels, ways=5, shots=2, queries=10, rng=rng)
        assert len(set(ep.classes)) == 5 and 8 not in ep.classes
        assert len(ep.support) == 10 and len(ep.query) == 50
        assert not set(ep.support) & set(ep.query)
        np.testing.assert_array_equal(labels[ep.support], ep.classes[ep.support_labels])
        np.testing.assert_array_equal(labels[ep.query], ep.classes[ep.query_labels])
    with pytest.raises(DataError, match="only 8 have"):
        fewshot.sample_episode(labels, ways=9, shots=2, queries=10, rng=rng)


# ------------------------------------------------------------------------------------ low-shot SVM

def _voc_like(n, d, classes, seed):
    """Multi-label features with VOC's label convention (1 present, -1 absent, 0 difficult)."""
    rng = np.random.default_rng(seed)
    present = rng.random((n, classes)) < 0.3
    feats = np.maximum(present @ rng.normal(size=(classes, d)) + rng.normal(size=(n, d)), 0)
    labels = np.where(present, 1, -1)
    labels[(rng.random((n, classes)) < 0.05) & ~present] = 0
    return feats, labels


def test_lowshot_sampler_counts():
    _, labels = _voc_like(400, 4, 5, 0)
    rng = np.random.default_rng(0)
    picked = lowshot_sampling.sample_lowshot(labels, 4, 19 * 4, rng)
    for c, idx in enumerate(picked):
        assert len(np.unique(idx)) == len(idx) == 4 + 76
        assert (labels[idx, c] == 1).sum() == 4 and (labels[idx, c] == -1).sum() == 76
    too_many = int((labels == 1).sum(axis=0).max()) + 1
    assert lowshot_sampling.sample_lowshot(labels, too_many, 1, rng) == [None] * 5


@pytest.mark.parametrize("n, d", [(150, 64), (60, 256)])  # by default solved on w, then on the Gram matrix
def test_svm_path_solver_matches_liblinear(n, d):
    from sklearn.svm import LinearSVC

    feats, labels = _voc_like(n, d, 2, 1)
    x, y = svm_solver.l2_normalize(feats), np.where(labels[:, 0] == 1, 1.0, -1.0)
    costs = (0.1, 1.0, 10.0)  # costs where liblinear converges within max_iter: the optimum is unique
    W = svm_solver.fit_svm_path(x, y, costs)
    for cost, w in zip(costs, W):
        ref = LinearSVC(C=cost, class_weight={1: 2, -1: 1}, dual=True, max_iter=2000, tol=1e-4).fit(x, y)
        np.testing.assert_allclose(svm_solver.add_bias(x) @ w, ref.decision_function(x), atol=2e-3)
    # Both kernels walk the same coordinates in the same order: they agree far inside liblinear's tolerance.
    xb = svm_solver.add_bias(x).astype(np.float32)
    on_w, on_gram = (svm_solver.solve_path(xb, y, costs, 2.0, 1e-4, 2000, 0, gram=g) for g in (False, True))
    np.testing.assert_allclose(xb @ on_gram.T, xb @ on_w.T, atol=1e-4)


@pytest.mark.parametrize("selection", ["vissl", "cv"])
def test_lowshot_svm_equals_serial_sklearn_reference(selection):
    train, train_labels = _voc_like(240, 64, 4, 2)
    test, test_labels = _voc_like(120, 64, 4, 3)
    costs = lowshot_svm.VISSL_COSTS if selection == "vissl" else (0.1, 1.0, 10.0)  # cv: 4x the fits
    cfg = lowshot_svm.LowShotSvmConfig(ks=(1, 2, 4, 100), num_samples=2, cost_selection=selection, n_jobs=2,
                                       costs=costs)
    ours = lowshot_svm.lowshot_svm_eval(train, train_labels, test, test_labels, cfg, seed=0)
    ref = lowshot_svm.lowshot_svm_eval(train, train_labels, test, test_labels, replace(cfg, solver="sklearn"), seed=0)
    assert set(ours.map_values) == set(ref.map_values) == {"1", "2", "4", "full"}  # ~72 positives < 100
    for k in ref.map_values:
        np.testing.assert_allclose(ours.map_values[k], ref.map_values[k], atol=0.1)
    assert ours.chosen_cost == ref.chosen_cost
    assert ours.notes == ref.notes and any("k=100 skipped" in n for n in ours.notes)


def test_lowshot_batched_float32_scoring_equals_per_model_ap():
    # The protocol scores many models with one float32 product; each must get the AP of scoring it alone.
    test, test_labels = _voc_like(200, 32, 3, 4)
    xt = svm_solver.l2_normalize(test)
    rng = np.random.default_rng(0)
    weights = {(k, 0, c): rng.normal(size=(3, 33)).astype(np.float32) for k in (1, 2) for c in range(3)}
    cfg = lowshot_svm.LowShotSvmConfig(costs=(0.1, 1.0, 10.0), n_jobs=2, ap="voc07_11point")
    got = lowshot_svm._test_aps(weights, svm_solver.add_bias(xt).astype(np.float32), test_labels, cfg, chunk=4)
    assert set(got) == set(weights)
    for key, W in weights.items():
        want = [voc07_ap(svm_solver.add_bias(xt) @ w.astype(np.float64), test_labels[:, key[2]]) for w in W]
        np.testing.assert_allclose(got[key], want, atol=1e-12)


# ------------------------------------------------------------------------------------ feature cache

def _images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        paths.append(folder / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def test_features_equal_plain_forward_cached_and_invalidated(tmp_path, model_file):
    from torchvision.transforms import v2

    paths = _images(tmp_path / "imgs", 6)
    model, info = load_model(str(model_file))
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    tf = EvalTransform.for_model(info, 36, 32)
    first = extract_features(model, paths, tf, weights_sha256=info["weights_sha256"], batch_size=4)
    assert not first.from_cache and len(calls) == 2
    plain = v2.Compose([v2.Resize(36, antialias=True), v2.CenterCrop(32), v2.ToImage(),
                        v2.ToDtype(torch.float32, scale=True), v2.Normalize(info["mean"], info["std"])])
    with torch.no_grad():
        expected = model(torch.stack([plain(Image.open(p).convert("RGB")) for p in paths]))
    torch.testing.assert_close(first.features, expected, atol=1e-4, rtol=1e-4)

    calls.clear()
    again = extract_features(model, paths, tf, weights_sha256=info["weights_sha256"], batch_size=4)
    assert again.from_cache and not calls and torch.equal(again.features, first.features)
    assert not [p for p in again.cache_path.parent.iterdir() if p.name.startswith(".")]  # no temporaries left

    changed = tmp_path / "changed.safetensors"
    state = timm.create_model("resnet18", num_classes=0).state_dict()
    save_file(state, str(changed))
    other, other_info = load_model(str(changed))
    assert other_info["weights_sha256"] != info["weights_sha256"]
    fresh = extract_features(other, paths, tf, weights_sha256=other_info["weights_sha256"], batch_size=4)
    assert not fresh.from_cache and not torch.allclose(fresh.features, first.features)


def test_features_report_a_corrupt_image_by_path(tmp_path, model_file):
    paths = _images(tmp_path / "imgs", 3)
    paths[1].write_bytes(b"not a png")
    model, info = load_model(str(model_file))
    with pytest.raises(DataError, match="1.png"):
        extract_features(model, paths, EvalTransform.for_model(info, 32, 32), weights_sha256=None)


# ------------------------------------------------------------------------- protocols, end to end

def _check_record(record, protocol, benchmark, metric_names):
    assert record["protocol"] == protocol and record["benchmark"] == benchmark
    assert record["dataset"]["name"] == "embedded" and record["dataset"]["fingerprint"].startswith("sha256")
    assert len(record["model"]["weights_sha256"]) == 64
    assert set(metric_names) <= set(record["metrics"])
    for m in record["metrics"].values():
        assert 0.0 <= m["mean"] <= 100.0
    on_disk = json.loads(Path(record["_path"]).read_text())
    assert on_disk["metrics"] == json.loads(json.dumps(record["metrics"]))


def test_knn_end_to_end_matches_brute_force(tmp_path, model_file):
    sets = TINY + ["max_per_class=15"]
    record = knn.run(str(model_file), "embedded", tmp_path, overrides=sets)
    _check_record(record, "knn", "embedded_knn", ["top1@20", "top1@200"])
    # Recompute top-1@20 independently from the (cached) features.
    cfg = resolve_config(knn.KnnConfig, knn.PRESETS, "embedded", sets)
    model, info = load_model(str(model_file))
    root = Path(record["dataset"]["path"]) / "classify"
    train = read_image_split(root, "train", max_per_class=15)
    val = read_image_split(root, "val", classes=train.classes, max_per_class=15)
    tf = EvalTransform.for_model(info, cfg.resize, cfg.crop)
    ftr = extract_features(model, train.paths, tf, weights_sha256=info["weights_sha256"]).features.numpy()
    fva = extract_features(model, val.paths, tf, weights_sha256=info["weights_sha256"]).features.numpy()
    votes = _brute_force_knn(ftr, train.labels, fva, len(train.classes), 20, 0.07)
    assert record["metrics"]["top1@20"]["mean"] == pytest.approx(100 * np.mean(votes.argmax(1) == val.labels))
    assert any("k=200 exceeds" in n for n in record["notes"])


def test_linear_sgd_end_to_end_keeps_trunk_frozen(tmp_path, model_file):
    assert [linear.lr_at(linear.LinearConfig(), e) for e in (0, 59, 60, 79, 80, 99)] == pytest.approx(
        [30, 30, 3, 3, 0.3, 0.3])
    record = linear.run(str(model_file), "embedded", tmp_path,
                        overrides=TINY + ["train_crop=32", "epochs=2", "milestones=[1]", "max_per_class=10"])
    _check_record(record, "linear", "embedded_linear", ["top1", "top5", "top1_best"])
    assert record["config"]["variant"] == "sgd" and "variant: sgd" in record["notes"]
    assert any("sanity check passed" in n for n in record["notes"])


def test_linear_fast_end_to_end(tmp_path, model_file):
    record = linear.run(str(model_file), "embedded", tmp_path, preset="embedded_fast",
                        overrides=TINY + ["max_per_class=20", "fast_weight_decays=[0.01,0.0001]", "fast_max_iter=30"])
    _check_record(record, "linear", "embedded_linear_fast", ["top1", "top5"])
    assert record["config"]["variant"] == "fast" and any("not MoCo's protocol" in n for n in record["notes"])
    fit, held = stratified_holdout(np.repeat(np.arange(3), 10), 0.1, 0)
    assert len(held) == 3 and not set(fit) & set(held) and len(fit) + len(held) == 30


def test_lowshot_svm_end_to_end(tmp_path, model_file):
    record = lowshot_svm.run(str(model_file), "embedded", tmp_path,
                             overrides=TINY + ["ks=[1,2]", "num_samples=2", "costs=[0.1,1.0]"])
    _check_record(record, "lowshot-svm", "embedded_lowshot_svm", ["mAP@k1", "mAP@k2", "mAP@full"])
    m = record["metrics"]["mAP@k2"]
    assert m["n"] == 2 and m["min"] <= m["mean"] <= m["max"] and m["cost"] in (0.1, 1.0)


def test_fewshot_end_to_end(tmp_path, model_file):
    record = fewshot.run(str(model_file), "embedded", tmp_path, overrides=TINY + ["episodes=20"])
    names = ["acc_5w1s_logreg", "acc_5w1s_centroid", "acc_5w5s_logreg", "acc_5w5s_centroid"]
    _check_record(record, "fewshot", "embedded_fewshot", names)
    for name in names:
        m = record["metrics"][name]
        assert m["n"] == 20 and m["ci95"] == pytest.approx(fewshot.confidence95(m["values"]))


# ------------------------------------------------------------------------------------------- CLI

def test_cli_knn_subprocess(tmp_path, model_file):
    out = tmp_path / "results"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "hexa_zoo", "transfer", "knn", "--model", str(model_file),
                           "--data", "embedded", "--out", str(out), "--set", "resize=32", "crop=32",
                           "--set", "max_per_class=20", "ks=[5]"],  # both forms: several values, repeated flag
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "embedded_knn (embedded preset): top1@5" in proc.stdout
    (record_path,) = out.glob("knn-*.json")
    assert json.loads(record_path.read_text())["config"]["ks"] == [5]


def test_cli_suite_routes_overrides_and_reports_missing_data(tmp_path, model_file, capsys):
    sets = ["knn.resize=32", "knn.crop=32", "knn.max_per_class=15"]  # as the knn test: features cached
    argv = ["suite", "--model", str(model_file), "--suite", "embedded", "--out", str(tmp_path), "--only", "knn"]
    assert cli.main(argv + [a for s in sets for a in ("--set", s)]) == 0
    (record_path,) = tmp_path.glob("knn-*.json")
    assert json.loads(record_path.read_text())["config"]["max_per_class"] == 15
    assert cli.main(["suite", "--model", str(model_file), "--suite", "paper", "--out", str(tmp_path),
                     "--only", "knn,fewshot"]) == 1
    assert "knn: FAILED: no dataset: pass --data-for knn=PATH" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="PROTOCOL.KEY=VALUE"):
        suite.run_suite("m", "embedded", str(tmp_path), overrides=["max_per_class=3"])


def test_cli_dataset_choices_are_the_readers_names():
    """`--dataset` offers exactly what the readers read: the many-shot layouts and the robustness sets."""
    from transfer.protocols import robustness
    from transfer.readers.manyshot import LAYOUTS

    parser = cli._parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    offered = {name: next((tuple(a.choices) for a in p._actions if a.dest == "dataset"), None)
               for name, p in sub.choices.items()}
    assert {name: choices for name, choices in offered.items() if choices} == {
        "manyshot": tuple(LAYOUTS), "finetune": tuple(LAYOUTS), "robustness": robustness.DATASETS}
    assert "aircraft" in LAYOUTS and "embedded-c" in robustness.DATASETS


def test_cli_errors_are_clear():
    with pytest.raises(ConfigError, match="unknown transfer protocol 'knm'") as err:
        suite.protocol("knm")
    assert "knn" in err.value.fix
    with pytest.raises(ConfigError, match="choose one of"):
        suite.run_protocol("fewshot", "m", "embedded", "out", preset="nonsense")
    for argv in [["--help"], ["suite", "--help"]] + [[name, "--help"] for name in cli.PROTOCOLS]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 0
