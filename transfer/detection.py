"""Detection transfer: Faster R-CNN (Mask R-CNN on COCO) fine-tuned from the pre-trained trunk.

The `paper` preset is the MoCo detection protocol (facebookresearch/moco `detection/configs`): R50-C4
with an extra BatchNorm after res5, VOC 07+12 trainval -> 07 test, 24k iterations at batch 16, lr 0.02
with 100 warm-up iterations and x0.1 at 18k and 22k, train short side 480-800 and test 800, every layer
trained (FREEZE_AT 0) with batch statistics (SyncBN over GPUs), precise BN before testing; AP50, AP
(IoU 0.50:0.95) and AP75 as detectron2's PascalVOCDetectionEvaluator reports them (VOC2007: 11-point AP),
mean of 5 runs. `paper_coco` is the COCO 2x Mask R-CNN C4 schedule (box AP and mask AP via pycocotools).
`embedded` trains a few dozen iterations on the embedded dataset's VOC scenes on a CPU.

Backends: `torchvision` (default; models from `transfer.detection_model`) runs here. `detectron2`
exports the trunk and writes the MoCo config and a train script (`transfer.detection_d2`), runs them
where detectron2 is installed, and otherwise prints the command to run elsewhere and writes no record.

    hexa transfer detection --model hexa_moco_r50 --data /data/VOC --preset paper
    hexa transfer detection --model hexa_moco_r50 --data /data/VOC --preset paper --set backend=detectron2
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from hexa_zoo.data import ignore_interrupt
from hexa_zoo.errors import ConfigError, DataError
from hexa_zoo.seeding import seed_everything

from . import detection_d2
from .common import resolve_data
from .detection_data import DetectionData, DetectionImage, benchmark_for, load_detection_data
from .detection_eval import Detection, coco_metrics, voc_detection_metrics
from .checkpoints import RunCheckpoint
from .detection_model import build_detector, eval_resolution
from .randomness import EpochSampler, SeededItems, quiet_loader_generator, seeded
from .runner import ProtocolRun

log = logging.getLogger(__name__)

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


class DetectionDataset(Dataset):
    """Images as float tensors in [0, 1] with torchvision detection targets; horizontal flip when training."""

    def __init__(self, images: Sequence[DetectionImage], *, train: bool, masks_from=None):
        from torchvision.transforms import v2

        self.images, self.train, self.masks_from = list(images), train, masks_from
        self.flip = v2.RandomHorizontalFlip(0.5)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as F

        item = self.images[i]
        try:
            with Image.open(item.path) as im:
                image = im.convert("RGB")
        except OSError as err:
            raise DataError(f"cannot read image {item.path}: {err}", "replace or remove the file") from None
        size = (image.height, image.width)
        tensor = tv_tensors.Image(F.to_dtype(F.to_image(image), torch.float32, scale=True))
        target = {"boxes": tv_tensors.BoundingBoxes(torch.from_numpy(item.boxes), format="XYXY", canvas_size=size),
                  "labels": torch.from_numpy(item.labels)}
        if self.masks_from is not None:
            masks = [self.masks_from.annToMask(a) for a in item.coco_anns]
            target["masks"] = tv_tensors.Mask(torch.from_numpy(np.stack(masks)) if masks
                                              else torch.zeros((0, *size), dtype=torch.uint8))
        if self.train:
            tensor, target = self.flip(tensor, target)
        target = {k: v.as_subclass(torch.Tensor) for k, v in target.items()}
        return tensor.as_subclass(torch.Tensor), target, i


def _collate(batch):
    return tuple(zip(*batch))


class AspectGroupedBatches:
    """Endless training batches of sample codes (epoch * n + i), as detectron2 builds them.

    Each epoch's order comes from `sampler` (`EpochSampler`, reshuffled per epoch); with `wide` given, an
    image joins the bucket of its orientation (width >= height or not) and a bucket that holds `batch`
    images is one batch (detectron2's AspectRatioGroupedDataset), so padding to a common size wastes less;
    leftovers carry over into the next epoch. Without `wide`, batches are consecutive images.
    """

    def __init__(self, sampler: EpochSampler, batch: int, wide: Sequence[bool] | None = None):
        self.sampler, self.batch, self.wide = sampler, batch, wide

    def __iter__(self) -> Iterator[list[int]]:
        buckets: dict[bool, list[int]] = {True: [], False: []}
        n = len(self.wide) if self.wide is not None else None
        for epoch in itertools.count():
            self.sampler.set_epoch(epoch)
            for code in self.sampler:
                bucket = buckets[bool(self.wide[code % n])] if self.wide is not None else buckets[True]
                bucket.append(code)
                if len(bucket) == self.batch:
                    yield bucket[:]
                    bucket.clear()


class _Skipping:
    """A batch sampler without its first `skip` batches (a resumed run continues the same stream)."""

    def __init__(self, batches, skip: int):
        self.batches, self.skip = batches, skip

    def __iter__(self):
        return itertools.islice(iter(self.batches), self.skip, None)


def infinite_batches(dataset: "DetectionDataset", cfg: DetectionConfig, seed: int, *, rank: int = 0,
                     world: int = 1, skip: int = 0) -> Iterator[tuple]:
    """Training batches, endlessly (detectron2 trains by iterations, not epochs), grouped by aspect ratio.

    Under torchrun each process takes its share of every epoch and `batch_size / world` images a step.
    `skip` leaves out the first batches without loading them (a resumed run).
    """
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size={cfg.batch_size} does not split over {world} processes",
                          "use a batch size divisible by the number of GPUs")
    sampler = EpochSampler(len(dataset), seed, "detection order", rank=rank, world=world)
    batch = min(cfg.batch_size // world, len(sampler))
    wide = [im.wide for im in dataset.images] if cfg.aspect_grouping else None
    items = SeededItems(dataset, seed, "detection flip")  # each image's flip from its own stream
    yield from DataLoader(items, batch_sampler=_Skipping(AspectGroupedBatches(sampler, batch, wide), skip),
                          num_workers=cfg.workers, collate_fn=_collate, generator=quiet_loader_generator(),
                          worker_init_fn=ignore_interrupt)


def distributed_setup() -> tuple[int, int, torch.device | None]:
    """(rank, world size, this process's GPU) under torchrun; (0, 1, None) in a single process."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def for_distributed(detector: nn.Module, cfg: DetectionConfig, device: torch.device) -> nn.Module:
    """SyncBatchNorm over all processes (MoCo: naiveSyncBN) and DistributedDataParallel around it."""
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":  # SyncBatchNorm runs on GPUs only; CPU processes keep per-process BN
        # in place for every module but the BatchNorms, so the C4 mask features still reach the box branch
        detector = nn.SyncBatchNorm.convert_sync_batchnorm(detector)
    return DistributedDataParallel(detector, device_ids=[device.index] if device.type == "cuda" else None)


# ------------------------------------------------------------------------------------------- training

def build_optimizer(model: nn.Module, cfg: DetectionConfig) -> torch.optim.SGD:
    """SGD as detectron2 builds it: weight decay on everything but normalisation layers."""
    norm, other, seen = [], [], set()
    for module in model.modules():
        is_norm = isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
        for p in module.parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:  # a parameter reached through two modules counts once
                seen.add(id(p))
                (norm if is_norm else other).append(p)
    return torch.optim.SGD([{"params": other, "weight_decay": cfg.weight_decay},
                            {"params": norm, "weight_decay": cfg.weight_decay_norm}],
                           lr=cfg.base_lr, momentum=cfg.momentum)


def lr_factor(iteration: int, cfg: DetectionConfig) -> float:
    """detectron2's WarmupMultiStepLR: linear warm-up from `warmup_factor`, then x`gamma` at each step."""
    decay = cfg.gamma ** sum(iteration >= s for s in cfg.steps)
    if iteration >= cfg.warmup_iters:
        return decay
    alpha = iteration / cfg.warmup_iters
    return decay * (cfg.warmup_factor * (1 - alpha) + alpha)


def train_detector(model: nn.Module, batches: Iterator, cfg: DetectionConfig, device: torch.device,
                   run_index: int = 0, *, resume: dict | None = None, save=None) -> list[dict]:
    """`cfg.max_iter` iterations of SGD on the summed detection losses; returns periodic loss logs.

    `save(state)` is called every `cfg.checkpoint_every` iterations with the model, optimizer, schedule, the
    global torch RNG (the RPN and RoI samplers draw from it) and the logs; `resume` is such a state to
    continue from (`batches` must then start at its iteration)."""
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))
    inner = getattr(model, "module", model)
    logs, start = [], 0
    if resume is not None:
        inner.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["rng"])
        logs, start = resume["logs"], resume["iteration"]
    model.train()
    bar = tqdm(range(start, cfg.max_iter), desc=f"detection run {run_index + 1}/{cfg.runs}", leave=False)
    for it in bar:
        images, targets, _ = next(batches)
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
            losses = model(images, targets)
        loss = sum(losses.values())
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"detection: loss became {loss.item()} at iteration {it}; "
                                     f"lower base_lr (now {cfg.base_lr})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if it % cfg.log_every == 0 or it == cfg.max_iter - 1:
            entry = {"iter": it + 1, "loss": loss.item(), "lr": optimizer.param_groups[0]["lr"],
                     **{k: v.item() for k, v in losses.items()}}
            logs.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.3f}")
        if save is not None and (it + 1) % cfg.checkpoint_every == 0 and it + 1 < cfg.max_iter:
            save({"iteration": it + 1, "model": inner.state_dict(), "optimizer": optimizer.state_dict(),
                  "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "logs": logs})
    return logs


@torch.no_grad()
def precise_bn(model: nn.Module, batches: Iterator, iters: int, device: torch.device) -> None:
    """Re-estimate BatchNorm statistics as averages over `iters` training batches (detectron2 PreciseBN)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or iters <= 0:
        return
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
    model.train()
    for _ in range(iters):
        images, targets, _ = next(batches)
        model([im.to(device) for im in images], [{k: v.to(device) for k, v in t.items()} for t in targets])
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum


@torch.no_grad()
def predict(model: nn.Module, data: DetectionData, cfg: DetectionConfig, device: torch.device) -> list[dict]:
    """The model's detections on every test image, in original image coordinates."""
    loader = DataLoader(DetectionDataset(data.test, train=False), batch_size=max(1, min(cfg.batch_size, 8)),
                        num_workers=cfg.workers, collate_fn=_collate, worker_init_fn=ignore_interrupt)
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


# ---------------------------------------------------------------------------------------------- run

def run(model: str, data: str, out: str | Path, *, preset: str = "embedded", overrides: Sequence[str] = (),
        seed: int = 0) -> dict | None:
    """Train and evaluate a detector on `data`; write one record (None for a detectron2 hand-off).

    Under `torchrun --nproc_per_node N -m hexa_zoo transfer detection ...` training runs on N GPUs with
    SyncBatchNorm; process 0 evaluates and writes the record (the others return None).
    """
    run = ProtocolRun.start("detection", DetectionConfig, PRESETS, model, data, preset=preset,
                            overrides=overrides, seed=seed)
    cfg, trunk, info = run.cfg, run.trunk, run.info
    root = resolve_data(data)
    if cfg.backend == "detectron2":
        return detection_d2.run(run, root, Path(out))
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
    record = run.finish(benchmark_for(str(data), det_data, cfg, arch), out, metrics, notes=notes)
    checkpoint.done()
    return record
