"""Detection evaluation: the detector's test predictions, Pascal VOC AP as detectron2 reports it, and COCO AP
through pycocotools.

VOC follows detectron2's `PascalVOCDetectionEvaluator` (itself py-faster-rcnn's `voc_eval.py`), which is
what the MoCo detection numbers were measured with:

- boxes are in VOC pixel coordinates (1-based, inclusive), so widths and heights carry a `+ 1`;
- detections of a class are sorted by score and matched greedily to the unmatched ground-truth box of
  highest IoU in the same image; a match needs IoU *strictly above* the threshold;
- a detection matched to a `difficult` box counts as neither true nor false positive, and difficult boxes
  do not count as positives;
- AP per class is the 11-point interpolated AP for VOC2007 (`use_07_metric=True`) and the area under the
  precision envelope otherwise;
- AP50 and AP75 are the class means at IoU 0.5 and 0.75; AP is the mean over IoU 0.50, 0.55, ..., 0.95.

One deliberate difference: a class with no (non-difficult) ground truth in the test set is left out of the
means and named in `skipped_classes` (detectron2 would count it as AP 0). Real VOC07 test has every class.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from hexa_zoo.data import ignore_interrupt

from ...readers.detection import DetectionData
from .batches import DetectionDataset, collate
from .config import DetectionConfig
from .model import eval_resolution

VOC_IOU_THRESHOLDS = tuple(t / 100 for t in range(50, 100, 5))


@dataclass(frozen=True)
class Detection:
    """One predicted box: image id, class name, score and (xmin, ymin, xmax, ymax) in VOC 1-based pixels."""

    image_id: str
    label: str
    score: float
    box: tuple[float, float, float, float]


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """AP from a precision/recall curve: VOC07's 11-point interpolation, or the exact envelope area."""
    recall, precision = np.asarray(recall, float), np.asarray(precision, float)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            above = recall >= t
            ap += (precision[above].max() if above.any() else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the precision envelope
    changes = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def _iou_voc(box: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """IoU of one box against many, in VOC's inclusive pixel convention (+1 on widths and heights)."""
    iw = np.maximum(np.minimum(gts[:, 2], box[2]) - np.maximum(gts[:, 0], box[0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(gts[:, 3], box[3]) - np.maximum(gts[:, 1], box[1]) + 1.0, 0.0)
    inter = iw * ih
    union = ((box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
             + (gts[:, 2] - gts[:, 0] + 1.0) * (gts[:, 3] - gts[:, 1] + 1.0) - inter)
    return inter / union


def _class_ap(dets: Sequence[Detection], gt_boxes: Mapping[str, np.ndarray],
              gt_difficult: Mapping[str, np.ndarray], thresholds: Sequence[float],
              use_07_metric: bool) -> list[float] | None:
    """AP of one class at each IoU threshold, or None when the class has no non-difficult ground truth."""
    npos = int(sum((~d).sum() for d in gt_difficult.values()))
    if npos == 0:
        return None
    order = np.argsort([-d.score for d in dets], kind="stable")
    dets = [dets[i] for i in order]
    # The best-overlapping ground truth of each detection does not depend on the threshold: compute once.
    best_iou = np.full(len(dets), -np.inf)
    best_gt = np.zeros(len(dets), dtype=int)
    for i, det in enumerate(dets):
        gts = gt_boxes.get(det.image_id)
        if gts is not None and len(gts):
            ious = _iou_voc(np.asarray(det.box, float), gts)
            best_gt[i], best_iou[i] = int(np.argmax(ious)), float(np.max(ious))
    aps = []
    for thresh in thresholds:
        taken = {image_id: np.zeros(len(b), bool) for image_id, b in gt_boxes.items()}
        tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
        for i, det in enumerate(dets):
            if best_iou[i] > thresh:
                j = best_gt[i]
                if gt_difficult[det.image_id][j]:
                    continue  # neither a hit nor a miss
                if not taken[det.image_id][j]:
                    tp[i], taken[det.image_id][j] = 1.0, True
                else:
                    fp[i] = 1.0  # a duplicate of an already found object
            else:
                fp[i] = 1.0
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / npos
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        aps.append(voc_ap(recall, precision, use_07_metric))
    return aps


def voc_detection_metrics(detections: Iterable[Detection], ground_truth: Mapping[str, Sequence],
                          classes: Sequence[str], *, use_07_metric: bool = True,
                          iou_thresholds: Sequence[float] = VOC_IOU_THRESHOLDS) -> dict:
    """AP50, AP, AP75 (percentages) over `classes`, detectron2's PascalVOCDetectionEvaluator style.

    `ground_truth` maps every test image id to its objects (anything with `.name`, `.bbox` as VOC
    (xmin, ymin, xmax, ymax) and `.difficult`); images without objects must still be listed, since a
    detection there is a false positive. Returns `{"AP50", "AP", "AP75", "per_class_AP50",
    "skipped_classes"}`.
    """
    thresholds = [float(t) for t in iou_thresholds]
    by_class: dict[str, list[Detection]] = defaultdict(list)
    for det in detections:
        if det.image_id not in ground_truth:
            raise KeyError(f"detection on image {det.image_id!r}, which is not in the ground truth")
        by_class[det.label].append(det)
    per_class, skipped = {}, []
    for name in classes:
        boxes, difficult = {}, {}
        for image_id, objects in ground_truth.items():
            mine = [o for o in objects if o.name == name]
            boxes[image_id] = np.asarray([o.bbox for o in mine], float).reshape(-1, 4)
            difficult[image_id] = np.asarray([bool(o.difficult) for o in mine], bool)
        aps = _class_ap(by_class.get(name, []), boxes, difficult, thresholds, use_07_metric)
        if aps is None:
            skipped.append(name)
        else:
            per_class[name] = aps
    if not per_class:
        raise ValueError("no class has ground truth in the test set: nothing to evaluate")
    table = np.asarray(list(per_class.values())) * 100.0  # classes x thresholds
    mean_per_threshold = table.mean(axis=0)

    def at(t: float) -> float:
        return float(mean_per_threshold[thresholds.index(t)]) if t in thresholds else float("nan")

    return {"AP50": at(0.5), "AP": float(mean_per_threshold.mean()), "AP75": at(0.75),
            "per_class_AP50": {n: float(v[thresholds.index(0.5)] * 100) for n, v in per_class.items()}
            if 0.5 in thresholds else {}, "skipped_classes": skipped}


def coco_metrics(coco_gt, results: list[dict], iou_type: str = "bbox") -> dict:
    """COCO AP (percentages) of `results` (COCO result dicts) against a pycocotools `COCO` object.

    Returns AP (IoU 0.50:0.95), AP50, AP75, APs, APm, APl from `COCOeval.stats`. No results at all gives
    zeros (pycocotools cannot load an empty result list). A size bucket without ground truth is NaN.
    """
    from pycocotools.cocoeval import COCOeval

    names = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    if not results:
        return dict.fromkeys(names, 0.0)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats[: len(names)]
    return {n: (float(s) * 100.0 if s >= 0 else float("nan")) for n, s in zip(names, stats)}


# ----------------------------------------------------------------------------- the detector's outputs

@torch.no_grad()
def predict(model: nn.Module, data: DetectionData, cfg: DetectionConfig, device: torch.device) -> list[dict]:
    """The model's detections on every test image, in original image coordinates."""
    loader = DataLoader(DetectionDataset(data.test, train=False), batch_size=max(1, min(cfg.batch_size, 8)),
                        num_workers=cfg.workers, collate_fn=collate, worker_init_fn=ignore_interrupt)
    model.eval()
    outputs: list[dict] = []
    with eval_resolution(model, cfg.min_size_test):
        for images, _, indices in tqdm(loader, desc="detection eval", leave=False):
            for out, i in zip(model([im.to(device) for im in images]), indices):
                out = {k: (v.float() if v.is_floating_point() else v).cpu() for k, v in out.items()}
                outputs.append({"index": i, **out})
    return outputs


def evaluate(outputs: list[dict], data: DetectionData, *, masks: bool = False) -> tuple[dict[str, float], list[str]]:
    """VOC: AP50, AP, AP75. COCO: APbb (+ APbb50, APbb75) and APmk with masks. Percentages."""
    notes = []
    if data.format == "voc":
        dets = []
        for out in outputs:
            image_id = data.test[out["index"]].image_id
            for box, score, label in zip(out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist()):
                # Back to VOC's 1-based pixels, as detectron2's evaluator does.
                dets.append(Detection(image_id, data.classes[label - 1], score,
                                      (box[0] + 1, box[1] + 1, box[2], box[3])))
        m = voc_detection_metrics(dets, data.voc_ground_truth, data.classes, use_07_metric=True)
        if m["skipped_classes"]:
            notes.append(f"classes without test ground truth, left out of the means: {m['skipped_classes']}")
        return {"AP50": m["AP50"], "AP": m["AP"], "AP75": m["AP75"]}, notes
    from pycocotools import mask as mask_utils

    boxes, segms = [], []
    for out in outputs:
        image_id = data.test[out["index"]].image_id
        for j, (box, score, label) in enumerate(zip(out["boxes"].tolist(), out["scores"].tolist(),
                                                    out["labels"].tolist())):
            entry = {"image_id": image_id, "category_id": data.coco_category_ids[label - 1], "score": score}
            boxes.append({**entry, "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
            if masks:
                rle = mask_utils.encode(np.asfortranarray((out["masks"][j, 0] > 0.5).numpy().astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                segms.append({**entry, "segmentation": rle})
    bb = coco_metrics(data.coco_gt, boxes, "bbox")
    metrics = {"APbb": bb["AP"], "APbb50": bb["AP50"], "APbb75": bb["AP75"]}
    if masks:
        metrics["APmk"] = coco_metrics(data.coco_gt, segms, "segm")["AP"]
    return metrics, notes
