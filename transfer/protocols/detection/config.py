"""The detection recipe (`DetectionConfig`) and its presets: MoCo's VOC and COCO schedules and a CPU-sized one;
`benchmark_for`, the leaderboard table a run of a recipe lands in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

VOC_TRAIN_SIZES = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
COCO_TRAIN_SIZES = (640, 672, 704, 736, 768, 800)


@dataclass(frozen=True)
class DetectionConfig:
    """The MoCo detection protocol (detectron2 solver and RoI constants); see the module docstring."""

    backend: Literal["torchvision", "detectron2"] = "torchvision"
    layout: Literal["c4", "fpn"] = "c4"
    masks: bool = False                 # Mask R-CNN (COCO data only)
    format: Literal["auto", "voc", "coco"] = "auto"
    voc_train: tuple[str, ...] = ("2007:trainval", "2012:trainval")
    voc_test: str = "2007:test"
    coco_train: str = "train2017"       # annotations/instances_<split>.json and images in <split>/
    coco_test: str = "val2017"
    max_iter: int = 24000
    batch_size: int = 16                # images per iteration, over all GPUs
    base_lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0      # detectron2: no weight decay on normalisation layers
    steps: tuple[int, ...] = (18000, 22000)
    gamma: float = 0.1
    warmup_iters: int = 100
    warmup_factor: float = 0.001
    min_size_train: tuple[int, ...] = VOC_TRAIN_SIZES
    min_size_test: int = 800
    max_size: int = 1333
    rpn_pre_nms_top_n_train: int = 12000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 6000
    rpn_post_nms_top_n_test: int = 1000
    box_batch_size_per_image: int = 512
    roi_resolution: int = 14            # C4 RoIAlign output (ROI_BOX_HEAD.POOLER_RESOLUTION)
    precise_bn_iters: int = 200         # detectron2 TEST.PRECISE_BN (MoCo enables it)
    resume: str = ""                    # "auto": checkpoint every checkpoint_every iterations, continue a killed run
    checkpoint_every: int = 1000
    aspect_grouping: bool = True        # detectron2 ASPECT_RATIO_GROUPING: batches of all-wide or all-tall images
    runs: int = 1                       # independent trainings (seeds seed, seed+1, ...); MoCo reports 5
    gpus: int = 8                       # detectron2 backend: --num-gpus of its command (0: run on the CPU)
    workers: int = 4
    amp: bool = False
    device: str | None = None
    log_every: int = 20


PRESETS: dict[str, DetectionConfig] = {
    "paper": DetectionConfig(runs=5),
    "paper_coco": DetectionConfig(runs=1, masks=True, format="coco", max_iter=180000, steps=(120000, 160000),
                                  warmup_iters=1000, min_size_train=COCO_TRAIN_SIZES),
    # A CPU-sized run on the embedded 128 px scenes: few proposals and RoIs (pooled 7x7: res5 on a stride-16
    # map of 8x8 gains nothing from 14x14), a few dozen iterations.
    "embedded": DetectionConfig(voc_train=("2007:trainval",), max_iter=40, batch_size=4, base_lr=0.02, steps=(30,),
                                warmup_iters=5, min_size_train=(96, 112, 128), min_size_test=128, max_size=256,
                                rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=128,
                                rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=20,
                                box_batch_size_per_image=16, roi_resolution=7, precise_bn_iters=5, gpus=0,
                                workers=0, log_every=10, checkpoint_every=10),
}


# ------------------------------------------------------------------------------------- benchmark names

def arch_short(arch: str) -> str:
    """resnet50 -> r50 (for benchmark names such as voc0712_det_r50c4)."""
    m = re.fullmatch(r"resnet(\d+)", arch.split(".")[0])
    return f"r{m.group(1)}" if m else arch.split(".")[0].replace("_", "")


def benchmark_for(data_spec: str, data_format: str, cfg: DetectionConfig, arch: str) -> str:
    """voc0712_det_r50c4, embedded_det_r18c4, coco_det_maskrcnn_r50c4_2x, ... (the leaderboard table)."""
    layout = arch_short(arch) + cfg.layout
    if data_format == "voc":
        name = "embedded" if data_spec == "embedded" else "voc" + "".join(s[2:4] for s in cfg.voc_train)
    else:
        name = "embedded_coco" if data_spec == "embedded" else "coco"
    if not cfg.masks:
        return f"{name}_det_{layout}"
    schedule = {90000: "_1x", 180000: "_2x"}.get(cfg.max_iter, "")
    return f"{name}_det_maskrcnn_{layout}{schedule}"
