"""Detection transfer: Faster R-CNN (Mask R-CNN on COCO) fine-tuned from the pre-trained trunk.

The `paper` preset is the MoCo detection protocol (facebookresearch/moco `detection/configs`): R50-C4
with an extra BatchNorm after res5, VOC 07+12 trainval -> 07 test, 24k iterations at batch 16, lr 0.02
with 100 warm-up iterations and x0.1 at 18k and 22k, train short side 480-800 and test 800, every layer
trained (FREEZE_AT 0) with batch statistics (SyncBN over GPUs), precise BN before testing; AP50, AP
(IoU 0.50:0.95) and AP75 as detectron2's PascalVOCDetectionEvaluator reports them (VOC2007: 11-point AP),
mean of 5 runs. `paper_coco` is the COCO 2x Mask R-CNN C4 schedule (box AP and mask AP via pycocotools).
`embedded` trains a few dozen iterations on the embedded dataset's VOC scenes on a CPU.

Backends: `torchvision` (default; models from `transfer.protocols.detection.model`) runs here. `detectron2`
exports the trunk and writes the MoCo config and a train script (`transfer.protocols.detection.d2`), runs them
where detectron2 is installed, and otherwise prints the command to run elsewhere and writes no record.

    hexa transfer detection --model hexa_moco_r50 --data /data/VOC --preset paper
    hexa transfer detection --model hexa_moco_r50 --data /data/VOC --preset paper --set backend=detectron2
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from hexa_zoo.errors import DataError
from hexa_zoo.seeding import seed_everything

from ...checkpoints import RunCheckpoint
from . import d2
from .batches import DetectionDataset, infinite_batches
from .config import PRESETS, DetectionConfig, benchmark_for
from .evaluation import evaluate, predict
from .model import build_detector
from .training import distributed_setup, for_distributed, precise_bn, train_detector
from ...randomness import seeded
from ...readers.detection import load_detection_data
from ...runner import ProtocolRun

__all__ = ["PRESETS", "DetectionConfig", "embedded_sizes", "run"]


def embedded_sizes(share: float) -> dict:
    """The embedded preset's settings at `share` (0-1) of its full size: fewer iterations (at least 4), the
    schedule's step, warm-up and precise BN scaled with them."""
    iters = max(4, round(40 * share))
    return {"max_iter": iters, "steps": [max(1, iters * 3 // 4)], "warmup_iters": min(5, iters // 2),
            "precise_bn_iters": min(5, iters)}


def run(model: str, data: str, out: str | Path, *, preset: str = "embedded", overrides: Sequence[str] = (),
        seed: int = 0) -> dict | None:
    """Train and evaluate a detector on `data`; write one record (None for a detectron2 hand-off).

    Under `torchrun --nproc_per_node N -m hexa_zoo transfer detection ...` training runs on N GPUs with
    SyncBatchNorm; process 0 evaluates and writes the record (the others return None).
    """
    run = ProtocolRun.start("detection", DetectionConfig, PRESETS, model, data, preset=preset,
                            overrides=overrides, seed=seed)
    cfg, trunk, info = run.cfg, run.trunk, run.info
    root = run.root
    if cfg.backend == "detectron2":
        return d2.run(run, Path(out))
    det_data = load_detection_data(root, cfg)
    if not det_data.train or not det_data.test:
        raise DataError(f"no {'training' if not det_data.train else 'test'} images in {det_data.description}",
                        "check the split files")
    rank, world, dist_device = distributed_setup()
    device = dist_device or run.device
    arch = info.get("arch") or "resnet50"
    metrics: dict[str, list[float]] = {}
    notes = [f"backend torchvision, layout {cfg.layout}, {'Mask' if cfg.masks else 'Faster'} R-CNN; "
             f"{det_data.description}; {len(det_data.train)} train / {len(det_data.test)} test images",
             "torchvision losses (smooth-L1 beta 1/9) differ from detectron2; use backend=detectron2 for the exact "
             "published pipeline",
             f"batches {'grouped by aspect ratio (as detectron2)' if cfg.aspect_grouping else 'not grouped by aspect'}; "
             f"BatchNorm statistics over each process's {cfg.batch_size // world} padded images (MoCo: naiveSyncBN "
             "over 8 GPUs x 2 images, each GPU padding only its own pair)"]
    if cfg.masks and cfg.layout == "c4":
        notes.append("C4 Mask R-CNN as detectron2's Res5ROIHeads: in training the mask head takes the box head's "
                     "res5 features of the foreground proposals (res5 runs once per step); at inference the "
                     "predicted boxes are pooled and run through res5 again")
    train_set = DetectionDataset(det_data.train, train=True,
                                 masks_from=det_data.coco_train_api if cfg.masks else None)
    run.use_data(root, det_data.files, fingerprint_root=root, format=det_data.format, classes=det_data.classes,
                 train_images=len(det_data.train), test_images=len(det_data.test))
    checkpoint = RunCheckpoint.for_run(run, out)
    state = checkpoint.load()
    first_run = 0
    if state is not None:
        first_run, metrics, notes = state["run"], state["metrics"], state["notes"]
        notes.append(f"resumed in run {first_run + 1} at iteration {state['train']['iteration'] if state['train'] else 0}"
                     f" from {checkpoint.path.name}")

    def save(run_index: int, train_state: dict | None) -> None:
        if rank == 0:
            checkpoint.save({"run": run_index, "train": train_state, "metrics": metrics, "notes": notes})

    for r in range(first_run, cfg.runs):
        run_seed = seed + r
        seed_everything(run_seed)  # what still draws from the global RNGs: the RPN's and RoI heads' sampling
        with seeded(run_seed, "detection init"):
            detector = build_detector(
                trunk, arch, len(det_data.classes), layout=cfg.layout, masks=cfg.masks,
                min_size_train=cfg.min_size_train, max_size=cfg.max_size, image_mean=info["mean"],
                image_std=info["std"], rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
                rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train, rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
                rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test, box_batch_size_per_image=cfg.box_batch_size_per_image,
                roi_resolution=cfg.roi_resolution,
            ).to(device)
        for p in detector.parameters():
            p.requires_grad_(True)  # FREEZE_AT 0: the whole trunk trains
        if world > 1:
            detector = for_distributed(detector, cfg, device)
        resume = state["train"] if state is not None and state["run"] == r else None
        batches = infinite_batches(train_set, cfg, run_seed, rank=rank, world=world,
                                   skip=resume["iteration"] if resume else 0)
        logs = train_detector(detector, batches, cfg, device, r, resume=resume,
                              save=lambda train_state, r=r: save(r, train_state))
        detector = getattr(detector, "module", detector)
        precise_bn(detector, batches, cfg.precise_bn_iters, device)  # every process: SyncBN gathers statistics
        if rank != 0:
            torch.distributed.barrier()  # rank 0 evaluates and writes the record
            continue
        values, eval_notes = evaluate(predict(detector, det_data, cfg, device), det_data, masks=cfg.masks)
        if world > 1:
            torch.distributed.barrier()
        for name, value in values.items():
            metrics.setdefault(name, []).append(value)
        notes += [f"run {r + 1} (seed {run_seed}): " + ", ".join(f"{k} {v:.2f}" for k, v in values.items()),
                  f"run {r + 1} losses: first {logs[0]['loss']:.3f}, last {logs[-1]['loss']:.3f}"] + eval_notes
        if r + 1 < cfg.runs:
            save(r + 1, None)
    if world > 1:
        torch.distributed.destroy_process_group()
    if rank != 0:
        return None
    if world > 1:
        bn = "SyncBatchNorm" if device.type == "cuda" else "per-process BatchNorm (CPU)"
        notes.append(f"trained on {world} processes with {bn}, {cfg.batch_size // world} images each")
    record = run.finish(benchmark_for(str(data), det_data.format, cfg, arch), out, metrics, notes=notes)
    checkpoint.done()
    return record
