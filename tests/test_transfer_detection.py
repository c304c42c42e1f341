"""Detection transfer: VOC/COCO AP on hand-made cases, the C4 model's weights, a tiny end-to-end run,
and the detectron2 hand-off."""

from __future__ import annotations

import json
import pickle
import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from hexa_zoo.errors import ConfigError
from transfer.protocols import detection
from transfer.protocols.detection import batches, evaluation, training
from transfer.protocols.detection import d2 as detection_d2
from transfer.readers.detection import load_detection_data
from transfer.common import resolve_config
from transfer.protocols.detection.evaluation import Detection, coco_metrics, voc_ap, voc_detection_metrics
from transfer.protocols.detection.model import build_detector, trunk_parameters

Obj = namedtuple("Obj", "name bbox difficult")


# ------------------------------------------------------------------------------------------ VOC metric

def _gt():
    return {"a": [Obj("cat", (1, 1, 10, 10), False), Obj("cat", (21, 21, 30, 30), True),
                  Obj("dog", (40, 40, 60, 70), False)],
            "b": [Obj("cat", (1, 1, 10, 10), False)],
            "c": []}


def test_voc_ap_perfect_and_empty():
    gt = _gt()
    perfect = [Detection(i, o.name, 0.9, o.bbox) for i, objs in gt.items() for o in objs]
    m = voc_detection_metrics(perfect, gt, ["cat", "dog"])
    assert m["AP50"] == pytest.approx(100) and m["AP"] == pytest.approx(100) and m["AP75"] == pytest.approx(100)
    empty = voc_detection_metrics([], gt, ["cat", "dog"])
    assert (empty["AP50"], empty["AP"], empty["AP75"]) == (0, 0, 0)


def test_voc_ap_hand_computed_case_with_difficult_ignored():
    gt = _gt()
    dets = [Detection("a", "cat", 0.9, (1, 1, 10, 10)),     # true positive (IoU 1)
            Detection("a", "cat", 0.8, (21, 21, 30, 30)),   # on a difficult box: ignored
            Detection("b", "cat", 0.7, (50, 50, 60, 60)),   # false positive
            Detection("b", "cat", 0.6, (1, 1, 10, 13))]     # IoU 100/130 = 0.77: a hit up to IoU 0.75
    m = voc_detection_metrics(dets, gt, ["cat"])
    # IoU <= 0.75: precision/recall (1, .5) (1, .5) (.5, .5) (2/3, 1): 11-point AP = (6 * 1 + 5 * 2/3) / 11.
    low = (6 + 5 * 2 / 3) / 11
    # IoU >= 0.8: the last detection misses, recall stays 0.5: AP = 6 / 11.
    high = 6 / 11
    assert m["AP50"] == pytest.approx(100 * low)
    assert m["AP75"] == pytest.approx(100 * low)
    assert m["AP"] == pytest.approx(100 * (6 * low + 4 * high) / 10)
    # The all-points (VOC2010+) area under the envelope at IoU 0.5: 0.5 * 1 + 0.5 * 2/3.
    cont = voc_detection_metrics(dets, gt, ["cat"], use_07_metric=False, iou_thresholds=[0.5])
    assert cont["AP50"] == pytest.approx(100 * (0.5 + 0.5 * 2 / 3))
    # A class with no detections counts 0 in the mean; a class without ground truth is left out, and said.
    both = voc_detection_metrics(dets, gt, ["cat", "dog", "bird"])
    assert both["AP50"] == pytest.approx(100 * low / 2) and both["skipped_classes"] == ["bird"]


def test_voc_ap_11_point_formula():
    recall, precision = np.array([0.2, 0.4, 0.4, 0.8]), np.array([1.0, 1.0, 0.5, 0.5])
    assert voc_ap(recall, precision, True) == pytest.approx((5 * 1.0 + 4 * 0.5) / 11)


# ----------------------------------------------------------------------------------------- COCO metric

def _coco_gt():
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [30, 30, 40, 50], "area": 2000, "iscrowd": 0}]}
    gt.createIndex()
    return gt


def test_coco_ap_perfect_and_hand_case():
    gt = _coco_gt()
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in gt.dataset["annotations"]]
    m = coco_metrics(gt, perfect)
    assert m["AP"] == pytest.approx(100) and m["AP50"] == pytest.approx(100)
    assert coco_metrics(gt, [])["AP"] == 0
    # One class found exactly, the other at IoU 304/400 = 0.76: a hit at IoU 0.50..0.75 only (6 of 10).
    part = [perfect[0] | {"bbox": [10, 10, 20, 15.2]}, perfect[1]]
    m = coco_metrics(gt, part)
    assert m["AP50"] == pytest.approx(100) and m["AP75"] == pytest.approx(100)
    assert m["AP"] == pytest.approx((0.6 + 1.0) / 2 * 100)


# ------------------------------------------------------------------------------------------- the model

@pytest.mark.parametrize("layout", ["c4", "fpn"])
def test_detector_trunk_weights_are_the_timm_trunk(layout):
    torch.manual_seed(0)
    trunk = timm.create_model("resnet18", num_classes=0)
    with torch.no_grad():  # make the BN statistics non-default so a forgotten buffer would show
        for m in trunk.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    model = build_detector(trunk, "resnet18", 3, layout=layout)
    mapped, original = trunk_parameters(model), trunk.state_dict()
    assert set(mapped) == set(original)
    for k in original:
        assert torch.equal(mapped[k], original[k]), k
    if layout == "c4":  # res5 + extra BN is the box head, the predictor sees res5's 512 channels
        assert model.backbone.out_channels == 256
        assert isinstance(model.roi_heads.box_head.res5.norm, torch.nn.BatchNorm2d)
        assert model.roi_heads.box_predictor.cls_score.in_features == 512
        assert model.roi_heads.box_predictor.cls_score.out_features == 4  # 3 classes + background


def _mask_batch():
    """Two 96x128 images with two boxes each and their instance masks (the box's left half)."""
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 96, 128, generator=g) for _ in range(2)]
    targets = []
    for boxes in (((8.0, 10.0, 60.0, 70.0), (50.0, 20.0, 120.0, 90.0)), ((20.0, 5.0, 90.0, 50.0), (5, 40, 40, 95))):
        boxes = torch.tensor(boxes, dtype=torch.float32)
        masks = torch.zeros(len(boxes), 96, 128, dtype=torch.uint8)
        for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
            masks[i, y0:y1, x0:(x0 + x1) // 2] = 1
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks})
    return images, targets


def test_c4_mask_head_reuses_the_box_heads_res5_features_as_detectron2():
    """detectron2's Res5ROIHeads: the mask loss of the foreground proposals' box features, res5 once a step.

    Against the independent computation (pool the foreground proposals again and run res5 on them, our
    behaviour before): with res5 deterministic (BatchNorm in eval mode) the mask loss and its gradient in
    res5 are the same, while res5 runs once instead of twice.
    """
    from transfer.protocols.detection.model import RoIAlignC4

    torch.manual_seed(0)
    trunk = timm.create_model("resnet18", num_classes=0)
    with torch.no_grad():  # timm zero-initialises each block's last BN scale: no gradient would reach conv1
        for m in trunk.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    model = build_detector(trunk, "resnet18", 2, masks=True,
                           min_size_train=(96,), max_size=128, rpn_pre_nms_top_n_train=300,
                           rpn_post_nms_top_n_train=60, box_batch_size_per_image=32)
    model.train()
    for m in model.modules():  # deterministic res5: batch statistics would differ between 32 and the fg RoIs
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    res5 = model.roi_heads.box_head.res5
    calls = []
    res5.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    images, targets = _mask_batch()

    def mask_loss_and_grad():
        calls.clear()
        model.zero_grad()
        torch.manual_seed(1)  # the same proposals and RoI samples in both runs
        losses = model(images, targets)
        losses["loss_mask"].backward()
        grad = res5.res5[0].conv1.weight.grad.clone()
        return losses, grad, list(calls)

    losses, grad, reused_calls = mask_loss_and_grad()
    assert reused_calls == [32 * 2]  # one res5 pass per step, on the box branch's 2 x 32 sampled RoIs
    # the reference: torchvision's wiring with res5 as the mask head on the foreground RoIs pooled again
    model.roi_heads.mask_roi_pool, model.roi_heads.mask_head = RoIAlignC4(14), res5
    ref_losses, ref_grad, ref_calls = mask_loss_and_grad()
    assert len(ref_calls) == 2 and 0 < ref_calls[1] < ref_calls[0]
    assert losses["loss_mask"].item() > 0
    for name in ("loss_mask", "loss_classifier", "loss_box_reg"):
        torch.testing.assert_close(losses[name], ref_losses[name], rtol=1e-5, atol=1e-6)
    assert grad.abs().sum() > 0
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-7)


def test_c4_mask_rcnn_pools_the_predicted_boxes_again_at_inference():
    torch.manual_seed(0)
    model = build_detector(timm.create_model("resnet18", num_classes=0), "resnet18", 2, masks=True,
                           min_size_train=(96,), max_size=128, box_score_thresh=0.0, rpn_post_nms_top_n_test=20)
    model.eval()
    res5 = model.roi_heads.box_head.res5
    calls = []
    res5.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    images, _ = _mask_batch()
    with torch.no_grad():
        outputs = model(images)
    n_boxes = sum(len(o["boxes"]) for o in outputs)
    assert n_boxes > 0 and calls == [calls[0], n_boxes]  # the proposals, then the predicted boxes
    assert all(o["masks"].shape[1:] == (1, 96, 128) for o in outputs)
    assert model.roi_heads.box_head.maps is None  # nothing kept at inference


def test_detector_refuses_non_resnet():
    with pytest.raises(ConfigError, match="plain ResNets"):
        build_detector(timm.create_model("resnet18", num_classes=0), "vit_small_patch16_224", 3)


def test_lr_schedule_is_detectron2_warmup_multistep():
    cfg = detection.PRESETS["paper"]
    assert training.lr_factor(0, cfg) == pytest.approx(0.001)
    assert training.lr_factor(50, cfg) == pytest.approx(0.001 * 0.5 + 0.5)
    assert training.lr_factor(100, cfg) == 1.0 and training.lr_factor(17999, cfg) == 1.0
    assert training.lr_factor(18000, cfg) == pytest.approx(0.1)
    assert training.lr_factor(22000, cfg) == pytest.approx(0.01)


# ---------------------------------------------------------------------------------- end to end (tiny)

@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory) -> Path:
    return make_tiny_voc(tmp_path_factory.mktemp("tinyvoc"))


def make_tiny_voc(root: Path) -> Path:
    """A 6-image VOCdevkit copied from the embedded scenes (real XML and JPEGs), 4 trainval / 2 test."""
    from hexa_zoo.embedded import embedded_root

    src = embedded_root() / "VOCdevkit" / "VOC2007"
    dst = root / "VOCdevkit" / "VOC2007"
    main = dst / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (dst / "Annotations").mkdir()
    (dst / "JPEGImages").mkdir()
    trainval = (src / "ImageSets" / "Main" / "trainval.txt").read_text().split()[:4]
    test = (src / "ImageSets" / "Main" / "test.txt").read_text().split()[:2]
    for i in trainval + test:
        shutil.copy(src / "Annotations" / f"{i}.xml", dst / "Annotations")
        shutil.copy(src / "JPEGImages" / f"{i}.jpg", dst / "JPEGImages")
    (main / "trainval.txt").write_text("\n".join(trainval) + "\n")
    (main / "test.txt").write_text("\n".join(test) + "\n")
    for f in (src / "ImageSets" / "Main").glob("*_trainval.txt"):  # the class list
        shutil.copy(f, main)
    return dst.parent.parent



TINY = ["max_iter=2", "batch_size=2", "min_size_train=[64]", "min_size_test=64", "max_size=128",
        "rpn_post_nms_top_n_train=32", "rpn_post_nms_top_n_test=8", "box_batch_size_per_image=4",
        "precise_bn_iters=1"]


def test_detection_trains_evaluates_and_writes_a_record(tiny_voc, r18_file, tmp_path):
    rec = detection.run(str(r18_file), str(tiny_voc), tmp_path, preset="embedded", overrides=TINY, seed=0)
    assert rec["protocol"] == "detection" and rec["benchmark"] == "voc07_det_r18c4"
    assert set(rec["metrics"]) == {"AP50", "AP", "AP75"}
    for m in rec["metrics"].values():
        assert m["n"] == 1 and 0.0 <= m["mean"] <= 100.0
    assert rec["metrics"]["AP"]["mean"] <= rec["metrics"]["AP50"]["mean"] + 1e-9
    assert rec["dataset"]["train_images"] == 4 and rec["dataset"]["test_images"] == 2
    assert rec["config"]["max_iter"] == 2 and rec["config"]["layout"] == "c4"
    assert json.loads(Path(rec["_path"]).read_text())["metrics"] == rec["metrics"]


# ----------------------------------------------------------------------------------------- detectron2

def test_detectron2_config_is_the_moco_protocol():
    cfg = detection.PRESETS["paper"]
    c = detection_d2.detectron2_config(
        cfg, depth=50, num_classes=20, weights=Path("/w/trunk.pkl"), mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225), train=["a", "b"], test=["t"], output_dir=Path("/o"), seed=0)
    assert c["MODEL"]["ROI_HEADS"]["NAME"] == "Res5ROIHeadsExtraNorm"
    assert c["MODEL"]["RESNETS"] == {"DEPTH": 50, "NORM": "naiveSyncBN", "STRIDE_IN_1X1": False}
    assert c["MODEL"]["BACKBONE"]["FREEZE_AT"] == 0
    assert c["MODEL"]["PIXEL_MEAN"] == [123.675, 116.28, 103.53] and c["MODEL"]["PIXEL_STD"] == [58.395, 57.12, 57.375]
    assert c["MODEL"]["RPN"]["PRE_NMS_TOPK_TEST"] == 6000 and c["MODEL"]["RPN"]["POST_NMS_TOPK_TEST"] == 1000
    assert c["SOLVER"]["MAX_ITER"] == 24000 and c["SOLVER"]["STEPS"] == [18000, 22000]
    assert (c["SOLVER"]["BASE_LR"], c["SOLVER"]["IMS_PER_BATCH"], c["SOLVER"]["WARMUP_ITERS"]) == (0.02, 16, 100)
    assert c["INPUT"]["MIN_SIZE_TRAIN"] == list(range(480, 801, 32)) and c["INPUT"]["MIN_SIZE_TEST"] == 800
    assert c["INPUT"]["FORMAT"] == "RGB" and c["TEST"]["PRECISE_BN"]["ENABLED"] is True
    assert c["MODEL"]["DEVICE"] == "cuda"  # 8 GPUs
    cpu = detection_d2.detectron2_config(detection.PRESETS["embedded"], depth=50, num_classes=3, weights=Path("/w"),
                                         mean=(0.5,) * 3, std=(0.5,) * 3, train=["a"], test=["t"],
                                         output_dir=Path("/o"), seed=0)
    assert cpu["MODEL"]["DEVICE"] == "cpu"  # the embedded preset runs on the CPU (gpus=0)


def test_detectron2_backend_without_detectron2_writes_files_and_no_record(tiny_voc, r18_file, tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.setattr(detection_d2, "detectron2_available", lambda: False)
    out = tmp_path / "results"
    with pytest.raises(ConfigError, match="bottleneck"):  # detectron2's C4 head needs a ResNet-50 or deeper
        detection.run(str(r18_file), str(tiny_voc), out, overrides=["backend=detectron2"])
    rec = detection.run(str(r18_file), str(tiny_voc), out, overrides=["backend=detectron2", "layout=fpn"])
    assert rec is None
    assert not list(out.glob("*.json"))  # no record: nothing ran
    folder = out / "detectron2-r18.safetensors"
    printed = capsys.readouterr().out
    assert "detectron2 is not installed" in printed and f"{folder / 'train_net.py'} --config-file" in printed
    config = __import__("yaml").safe_load((folder / "config.yaml").read_text())
    assert config["MODEL"]["WEIGHTS"] == str(folder / "trunk.pkl")
    assert config["MODEL"]["RESNETS"]["RES2_OUT_CHANNELS"] == 64  # required by detectron2 for R18/R34
    assert config["DATASETS"]["TRAIN"] == ["hexa_voc_2007_trainval"]
    datasets = json.loads((folder / "datasets.json").read_text())
    assert datasets["hexa_voc_2007_test"]["dirname"] == str(tiny_voc / "VOCdevkit" / "VOC2007")
    payload = pickle.loads((folder / "trunk.pkl").read_bytes())
    trunk = timm.create_model("resnet18", num_classes=0)
    from safetensors.torch import load_file

    trunk.load_state_dict(load_file(r18_file))
    sd = trunk.state_dict()
    assert np.array_equal(payload["model"]["stem.conv1.weight"], sd["conv1.weight"].numpy())
    assert np.array_equal(payload["model"]["res5.1.conv2.norm.running_var"], sd["layer4.1.bn2.running_var"].numpy())
    assert np.array_equal(payload["model"]["res3.0.shortcut.norm.weight"], sd["layer2.0.downsample.1.weight"].numpy())
    script = (folder / "train_net.py").read_text()
    compile(script, "train_net.py", "exec")
    assert "class Res5ROIHeadsExtraNorm(Res5ROIHeads)" in script


def test_coco_path_scores_ground_truth_outputs_as_perfect():
    """COCO reading, label <-> category mapping, xyxy -> xywh and RLE masks, end to end through COCOeval."""
    from hexa_zoo.embedded import embedded_root

    cfg = resolve_config(detection.DetectionConfig, detection.PRESETS, "embedded",
                                   ["format=coco", "masks=true", "coco_train=train", "coco_test=val"])
    data = load_detection_data(embedded_root(), cfg)
    assert data.format == "coco" and len(data.classes) == len(data.coco_category_ids)
    test_set = batches.DetectionDataset(data.test[:5], train=False, masks_from=data.coco_gt)
    outputs = []
    for i in range(len(test_set)):
        _, target, _ = test_set[i]
        n = len(target["labels"])
        outputs.append({"index": i, "boxes": target["boxes"], "labels": target["labels"], "scores": torch.ones(n),
                        "masks": target["masks"][:, None].float()})
    keep = {d.image_id for d in data.test[:5]}
    data.coco_gt.imgs = {k: v for k, v in data.coco_gt.imgs.items() if k in keep}  # COCOeval: these five only
    metrics, _ = evaluation.evaluate(outputs, data, masks=True)
    assert metrics["APbb"] == pytest.approx(100) and metrics["APmk"] == pytest.approx(100)


def test_precise_bn_sets_statistics_to_the_average_over_batches():
    class Net(torch.nn.Module):  # the detector's call signature: model(images, targets)
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm2d(3)

        def forward(self, images, targets):
            return self.bn(torch.stack(images))

    torch.manual_seed(0)
    batches = [([torch.randn(3, 4, 4) + k for _ in range(2)], [{}, {}], None) for k in range(3)]
    net = Net()
    training.precise_bn(net, iter(batches), 3, torch.device("cpu"))
    expected = torch.stack([torch.stack(b[0]).mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    assert torch.allclose(net.bn.running_mean, expected, atol=1e-6)
    assert net.bn.momentum == 0.1  # restored


def test_optimizer_has_no_weight_decay_on_norms_and_each_parameter_once():
    model = build_detector(timm.create_model("resnet18", num_classes=0), "resnet18", 3, masks=True)
    decay, no_decay = training.build_optimizer(model, detection.PRESETS["paper"]).param_groups
    assert (decay["weight_decay"], no_decay["weight_decay"], decay["lr"]) == (1e-4, 0.0, 0.02)
    norms = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    assert {id(p) for p in no_decay["params"]} == norms
    ids = [id(p) for g in (decay, no_decay) for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}  # res5 shared, once
