"""Robustness of the probe: PGD against an attack written here, the linear head saved and reused, and the
corruption / robustness-set protocols on fixtures."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hexa_zoo.errors import ConfigError
from transfer.protocols import adversarial, linear
from transfer.heads import load_head


def test_pgd_equals_an_attack_written_out_here():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    x, y = torch.rand(6, 3, 4, 4), torch.randint(0, 5, (6,))
    eps, steps = 4 / 255, 10
    alpha = 2.5 * eps / steps
    start = (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1) * eps
    got = adversarial.pgd_attack(model, x, y, eps, steps, alpha, start=start)
    # The same attack, plainly: start in the ball, ascend the loss's sign, clip to the ball and to [0, 1].
    want = (x + start).clamp(0, 1)
    for _ in range(steps):
        want = want.detach().requires_grad_(True)
        F.cross_entropy(model(want), y).backward()
        want = want + alpha * want.grad.sign()
        want = torch.max(torch.min(want, x + eps), x - eps).clamp(0, 1)
    torch.testing.assert_close(got, want.detach())
    assert (got - x).abs().max() <= eps + 1e-7
    with torch.no_grad():  # the attack does what it is for: the loss goes up
        assert F.cross_entropy(model(got), y) > F.cross_entropy(model(x), y)


def test_linear_saves_its_head_and_adversarial_reuses_it(r18_file, tmp_path, monkeypatch):
    monkeypatch.setenv("HEXA_FEATURE_CACHE", str(tmp_path / "cache"))
    sets = ["resize=32", "crop=32", "max_per_class=6", "fast_weight_decays=[0.001]", "fast_max_iter=20"]
    rec = linear.run(str(r18_file), "embedded", tmp_path / "lin", preset="embedded_fast", overrides=sets)
    head, meta = load_head(rec["_path"], trunk_sha256=rec["model"]["weights_sha256"])
    assert meta["protocol"] == "linear_fast" and len(meta["classes"]) == head.out_features == 10
    # The saved head on raw features gives the record's top-1 on the same cached features.
    from transfer.common import load_model
    from transfer.readers.images import read_image_split
    from transfer.features import EvalTransform, extract_features

    trunk, info = load_model(str(r18_file))
    val = read_image_split(Path(rec["dataset"]["path"]) / "classify", "val", max_per_class=6)
    feats = extract_features(trunk, val.paths, EvalTransform.for_model(info, 32, 32), weights_sha256=None).features
    with torch.no_grad():
        right = head(feats).argmax(1).numpy() == val.labels
    top1 = 100 * float(right.mean())
    assert top1 == pytest.approx(rec["metrics"]["top1"]["mean"], abs=1e-6)
    with pytest.raises(ConfigError, match="other trunk weights"):
        load_head(rec["_path"], trunk_sha256="0" * 64)

    adv = adversarial.run(str(r18_file), "embedded", tmp_path / "adv", overrides=[
        f"head={rec['_path']}", "resize=32", "crop=32", "max_per_class=3", "eps=[2.0]", "steps=3"])
    m = adv["metrics"]
    assert set(m) == {"top1_clean", "top1_pgd_eps2"}
    first3 = [i for c in range(10) for i in np.flatnonzero(val.labels == c)[:3]]  # max_per_class=3 of val
    assert m["top1_clean"]["mean"] == pytest.approx(100 * float(right[first3].mean()), abs=1e-6)
    assert m["top1_pgd_eps2"]["mean"] <= m["top1_clean"]["mean"]
    assert adv["artifacts"]["head"]["sha256"] == meta["sha256"]
    from leaderboards.compiler import compile_leaderboard  # the embedded suite's record: an embedded table

    compiled = compile_leaderboard([tmp_path / "adv"], tmp_path / "board", plots=False)
    assert compiled.tables["embedded_adversarial"]["top1_pgd_eps2"].tolist() == [m["top1_pgd_eps2"]["mean"]]


# ----------------------------------------------------------------------------------------- robustness

def test_mce_is_normalised_by_alexnets_published_errors():
    from transfer.protocols.robustness import ALEXNET_ERRORS, mce

    as_alexnet = {name: [100 * err] * 5 for name, err in ALEXNET_ERRORS.items()}
    assert mce(as_alexnet)["mCE"] == pytest.approx(100.0)
    half = mce({"gaussian_noise": [40.0, 45.0, 50.0, 55.0, 60.0]})
    assert half["error_gaussian_noise"] == pytest.approx(50.0)
    assert half["CE_gaussian_noise"] == pytest.approx(100 * 2.5 / (5 * 0.886428))
    assert "mCE" not in half  # only with all 15 corruptions


def test_corruptions_follow_hendrycks_formulas():
    from transfer.protocols.robustness import corrupt

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    x = image / 255.0
    want = np.clip((x - x.mean(axis=(0, 1))) * 0.1 + x.mean(axis=(0, 1)), 0, 1)  # contrast, severity 4
    np.testing.assert_array_equal(corrupt(image, "contrast", 4, rng), (want * 255).round().astype(np.uint8))
    noisy = corrupt(image, "gaussian_noise", 5, np.random.default_rng(1))
    want = np.clip(x + np.random.default_rng(1).normal(size=x.shape, scale=0.38), 0, 1)
    np.testing.assert_array_equal(noisy, (want * 255).round().astype(np.uint8))
    for name in ("shot_noise", "impulse_noise", "brightness", "pixelate", "jpeg_compression"):
        out = corrupt(image, name, 3, rng)
        assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)


def test_imagenet_r_maps_wnids_and_restricts_the_logits(r18_file, tmp_path, monkeypatch):
    from PIL import Image

    from transfer.protocols import robustness
    from transfer.common import load_model
    from transfer.features import EvalTransform, extract_features
    from transfer.heads import save_head

    monkeypatch.setenv("HEXA_FEATURE_CACHE", str(tmp_path / "cache"))
    trunk, info = load_model(str(r18_file))
    wnids = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475"]
    torch.manual_seed(1)
    head_fc = torch.nn.Linear(512, 5)
    tf = EvalTransform.for_model(info, 32, 32)
    entry = save_head(tmp_path / "lin", head_fc, classes=wnids, info=info, transform=tf, protocol="linear")
    rng = np.random.default_rng(0)
    data, paths, labels = tmp_path / "imagenet-r", [], []
    for c in (1, 3, 4):  # 3 of the head's 5 classes, as ImageNet-R holds 200 of the 1000
        for i in range(4):
            path = data / wnids[c] / f"art_{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
            paths.append(path)
            labels.append(c)
    record = robustness.run(str(r18_file), str(data), tmp_path / "out", overrides=[
        "dataset=imagenet-r", f"head={tmp_path / 'lin' / entry['path']}"])
    feats = extract_features(trunk, paths, tf, weights_sha256=None).features
    with torch.no_grad():
        logits = head_fc(feats)
    pred = np.array([1, 3, 4])[logits[:, [1, 3, 4]].argmax(1).numpy()]
    assert record["benchmark"] == "imagenet_r"
    assert record["metrics"]["top1"]["mean"] == pytest.approx(100 * np.mean(pred == np.array(labels)))
    from leaderboards.compiler import compile_leaderboard  # one column of the robustness table

    table = compile_leaderboard([tmp_path / "out"], tmp_path / "board", plots=False).tables["imagenet_robustness"]
    assert table["imagenet_r top1"].tolist() == [record["metrics"]["top1"]["mean"]]


def test_embedded_c_end_to_end(r18_file, tmp_path, monkeypatch):
    from transfer.protocols import robustness

    monkeypatch.setenv("HEXA_FEATURE_CACHE", str(tmp_path / "cache"))
    record = robustness.run(str(r18_file), "embedded", tmp_path, preset="embedded", overrides=[
        "resize=32", "crop=32", "max_per_class=3", "head_max_per_class=12", "corruptions=[contrast,jpeg_compression]",
        "severities=[1,5]"])
    m = record["metrics"]
    assert record["benchmark"] == "embedded_robustness_c"
    assert {"top1_clean", "error_contrast", "error_jpeg_compression", "mean_error"} <= set(m)
    assert m["mean_error"]["mean"] == pytest.approx((m["error_contrast"]["mean"] + m["error_jpeg_compression"]["mean"]) / 2)
