"""The paper presets follow the official code (VISSL, DINO, swav, detectron2); our earlier choices stay as
named variants."""

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from transfer.protocols.detection.batches import AspectGroupedBatches
from transfer.protocols import detection, knn, lowshot_svm, semisup
from transfer.features import pooled
from transfer.protocols.lowshot_svm import LowShotResult, result_metrics
from transfer.randomness import EpochSampler


def test_vissl_res5_pooling_is_avgpool6_stride1_flattened_channel_major():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=0).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        got = pooled(model, x, "vissl_res5")
        fmap = model.forward_features(x)  # (2, 512, 7, 7)
    want = torch.stack([torch.stack([fmap[b, :, i:i + 6, j:j + 6].mean(dim=(1, 2)) for i in (0, 1) for j in (0, 1)],
                                    dim=1).flatten() for b in range(2)])
    assert got.shape == (2, 512 * 4)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(pooled(model, x, "gap"), F.adaptive_avg_pool2d(fmap, 1).flatten(1))


def test_lowshot_paper_preset_is_vissl_and_ours_are_named_variants():
    paper = lowshot_svm.PRESETS["paper"]
    assert (paper.ap, paper.pooling, paper.std_ddof) == ("all_points", "vissl_res5", 0)
    assert lowshot_svm.PRESETS["paper_gap"].pooling == "gap"
    assert lowshot_svm.PRESETS["paper_11point"].ap == "voc07_11point"
    values = [50.0, 52.0, 57.0]
    m = result_metrics(LowShotResult(map_values={"1": values}, chosen_cost={"1": 1.0}))["mAP@k1"]
    assert m["std"] == pytest.approx(np.std(values)) == pytest.approx(m["std_ddof0"])
    assert m["std_ddof1"] == pytest.approx(np.std(values, ddof=1))
    assert result_metrics(LowShotResult(map_values={"1": values}), std_ddof=1)["mAP@k1"]["std"] == m["std_ddof1"]


def test_knn_presets_name_their_sources_constants():
    dino, vissl, lightly = (knn.PRESETS[p] for p in ("paper", "vissl", "lightly"))
    assert (dino.interpolation, dino.resize, dino.crop, dino.temperature) == ("bicubic", 256, 224, 0.07)
    assert 20 in dino.ks
    assert (vissl.ks, vissl.temperature) == ((200,), 0.1) and (lightly.ks, lightly.temperature) == ((200,), 0.1)
    assert knn.PRESETS["paper_bilinear"].interpolation == "bilinear"


def test_semisup_paper_reports_the_best_epoch_as_swav_prints():
    assert semisup.PRESETS["paper"].report == "best" and semisup.PRESETS["paper_final"].report == "final"


def test_detection_batches_are_grouped_by_aspect_ratio_like_detectron2():
    wide = [i % 3 == 0 for i in range(30)]
    batches = AspectGroupedBatches(EpochSampler(30, 0, "order"), 4, wide)
    seen = []
    for batch, _ in zip(batches, range(15)):  # two epochs' worth
        assert len(batch) == 4 and len({wide[c % 30] for c in batch}) == 1
        seen += batch
    assert len(set(seen)) == len(seen)  # no image twice within or across epochs (codes carry the epoch)
    first_epoch = {c for c in seen if c < 30}
    assert len(first_epoch) >= 30 - 2 * 3  # at most one partial bucket per orientation is carried over
