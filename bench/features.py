"""Benchmark: the shared feature extractor's throughput against the model's bare forward, same batches.

"Bare forward" is `model(x)` under inference_mode on batches already normalised and on the device.
"Extractor" is `transfer.features.forward_batches` on the same images as uint8 CPU batches: it adds the
host-to-device copy, the on-device normalisation, channels_last (CUDA) and the copy of the features
into the (pinned) output. Goal: extractor >= 0.9 of bare. For information, the end-to-end figure from
JPEG files (decoding and resizing in the default DataLoader workers, cache off) is reported too; goal
(issue 19) >= 0.8x of the bare forward on a 16-core GPU host.

    python bench/features.py                       # resnet18, 112 px on CPU; resnet50, 224 px on CUDA
    python bench/features.py --arch resnet50 --size 224 --batches 8

Figures are printed last as one JSON line (images per second; best of --repeats runs each).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

from transfer.common import select_device
from transfer.features import EvalTransform, extract_features, forward_batches

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward(model, batches, device) -> float:
    """Seconds for model(x) over already-normalised device batches."""
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            model(x)
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--batches", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = select_device(args.device)
    cuda = device.type == "cuda"
    arch = args.arch or ("resnet50" if cuda else "resnet18")
    size = args.size or (224 if cuda else 112)
    batch = args.batch or (256 if cuda else 32)
    n_batches = args.batches or (20 if cuda else 6)
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=0).eval().to(device)

    rng = np.random.default_rng(0)
    uint8_batches = [torch.from_numpy(rng.integers(0, 256, (batch, 3, size, size), dtype=np.uint8))
                     for _ in range(n_batches)]
    tf = EvalTransform(resize=size, crop=size, mean=MEAN, std=STD)
    normalize = tf.normalizer(device)
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    float_batches = [normalize(b.to(device)).contiguous(memory_format=memory_format) for b in uint8_batches]
    total = batch * n_batches

    bare_forward(model, float_batches[:2], device)  # warm-up (cuDNN autotune, allocator)
    forward_batches(model, uint8_batches[:2], 2 * batch, normalize, device=device)
    bare_s, ours_s = [], []
    for _ in range(args.repeats):  # interleaved, best of each: load from other processes hits both alike
        bare_s.append(bare_forward(model, float_batches, device))
        _sync(device)
        start = time.perf_counter()
        forward_batches(model, uint8_batches, total, normalize, device=device)
        ours_s.append(time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as tmp:  # end to end from JPEG files (quality 90), cache off
        paths = []
        for i, b in enumerate(uint8_batches[:max(1, n_batches // 2)]):
            for j, img in enumerate(b.permute(0, 2, 3, 1).numpy()):
                paths.append(Path(tmp) / f"{i}_{j}.jpg")
                Image.fromarray(img).save(paths[-1], quality=90)
        start = time.perf_counter()
        extract_features(model, paths, tf, weights_sha256=None, batch_size=batch, device=device, desc="bench")
        files_s = time.perf_counter() - start

    bare_ips, ours_ips = total / min(bare_s), total / min(ours_s)
    print(json.dumps({
        "bench": "features", "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "threads": torch.get_num_threads(), "arch": arch, "size": size, "batch": batch, "images": total,
        "bare_forward_ips": round(bare_ips, 1), "extractor_ips": round(ours_ips, 1),
        "ratio": round(ours_ips / bare_ips, 3), "end_to_end_from_files_ips": round(len(paths) / files_s, 1),
        "end_to_end_ratio": round(len(paths) / files_s / bare_ips, 3),
        "goal_0.9x": ours_ips / bare_ips >= 0.9, "goal_files_0.8x": len(paths) / files_s / bare_ips >= 0.8}))


if __name__ == "__main__":
    main()
