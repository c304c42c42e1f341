"""Benchmark: the epoch time of the linear protocol (MoCo's main_lincls, `hexa transfer linear --preset paper`).

    python bench/linear_epoch.py --device cuda --data DIR           # resnet50, 224 px, batch 256 (an ImageFolder)
    python bench/linear_epoch.py                                    # resnet18, 64 px, batch 32, on the CPU

It runs `transfer.protocols.linear.train_linear_sgd` itself, the paper preset with `--epochs` epochs, on an
ImageFolder of JPEGs (DIR, or `--images` synthetic 500x375 JPEGs written by bench/data_pipeline.py's
`write_jpegs`): each epoch decodes, crops and flips every image in the loader workers (sized as in the
protocol), runs the frozen trunk and steps the fc. An epoch ends at the protocol's own per-epoch log line,
so the figure includes its small validation pass (the fc on cached features). The first epoch carries the
loader workers' start and cuDNN's autotuning and is reported apart; `epoch_s` is the median of the others.
In the same run the trunk's bare forward on device-resident batches (no loader) is timed:
`ratio_to_bare_forward` near 1 means the GPU sets the pace, far below it means the loader does.
`imagenet_epoch_min` scales `epoch_s` to ImageNet's 1,281,167 training images (the paper protocol runs 100).

The fast variant (`--preset paper_fast`) has no epochs: its cost is one feature extraction, which
bench/features.py times from image files. The figures are printed last as one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import timm
import torch

from data_pipeline import write_jpegs
from transfer.common import select_device
from transfer.readers.images import read_image_split
from transfer.protocols.linear import PRESETS, train_linear_sgd

IMAGENET_TRAIN = 1_281_167
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class EpochClock(logging.Handler):
    """Notes the time of each of train_linear_sgd's per-epoch log lines."""

    def __init__(self, sync) -> None:
        super().__init__()
        self.sync, self.times = sync, []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("linear epoch"):
            self.sync()
            self.times.append(time.perf_counter())


def bare_forward_ips(trunk, batch: int, size: int, device: torch.device, sync, repeats: int = 5) -> float:
    """Images per second of the trunk alone on normalised device batches (best of `repeats`)."""
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    best = float("inf")
    with torch.no_grad():
        trunk(x)  # warm-up
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            trunk(x)
            sync()
            best = min(best, time.perf_counter() - start)
    return batch / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="an ImageFolder (DIR/<class>/<image>); default: --images synthetic JPEGs")
    parser.add_argument("--images", type=int, default=None, help="synthetic JPEGs to write without --data")
    parser.add_argument("--arch", default=None)
    parser.add_argument("--size", type=int, default=None, help="the train crop (RandomResizedCrop)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=3, help="epochs run; the first is reported apart (>= 2)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is the warm-up")
    device = select_device(args.device)
    cuda = device.type == "cuda"
    arch = args.arch or ("resnet50" if cuda else "resnet18")
    size = args.size or (224 if cuda else 64)
    batch = args.batch or (256 if cuda else 32)
    if cuda:
        torch.backends.cudnn.benchmark = True

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    torch.manual_seed(0)
    trunk = timm.create_model(arch, num_classes=0).to(device).eval()
    cfg = dataclasses.replace(PRESETS["paper"], epochs=args.epochs, milestones=(), batch_size=batch, train_crop=size)
    info = {"mean": MEAN, "std": STD}
    clock = EpochClock(sync)
    linear_log = logging.getLogger("transfer.protocols.linear")
    linear_log.addHandler(clock)
    linear_log.setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp) / "train"
        if not args.data:
            write_jpegs(root, args.images or (2048 if cuda else 128))
        train = read_image_split(root.parent, root.name)
        val_feats = torch.randn(64, trunk.num_features)
        val_labels = torch.randint(0, len(train.classes), (64,))
        sync()
        start = time.perf_counter()
        train_linear_sgd(trunk, info, train, val_feats, val_labels, cfg, device, seed=0)
    linear_log.removeHandler(clock)
    ends = [start] + clock.times
    epochs = [b - a for a, b in zip(ends, ends[1:])]
    epoch_s = statistics.median(epochs[1:])
    images = len(train.paths)
    bare = bare_forward_ips(trunk, batch, size, device, sync)
    print(json.dumps({
        "bench": "linear_epoch", "protocol": "main_lincls (preset paper)",
        "device": torch.cuda.get_device_name(device) if cuda else "cpu", "threads": torch.get_num_threads(),
        "arch": arch, "size": size, "batch": batch, "images": images, "epochs": args.epochs,
        "first_epoch_s": round(epochs[0], 3), "epoch_s": round(epoch_s, 3), "img_per_s": round(images / epoch_s, 1),
        "bare_forward_ips": round(bare, 1), "ratio_to_bare_forward": round(images / epoch_s / bare, 3),
        "imagenet_epoch_min": round(IMAGENET_TRAIN / (images / epoch_s) / 60, 1)}))


if __name__ == "__main__":
    main()
