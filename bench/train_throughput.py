"""Benchmark (not a test): end-to-end training images/s on JPEGs, the loader and augmentation included.

    python bench/train_throughput.py --data DIR [--recipe moco_v2_r50_200ep] [--batch 256] [--workers 16]
        [--steps 60] [--step-rate IMG_PER_S]

DIR is an ImageFolder of JPEGs (`bench/data_pipeline.py --write-images DIR`). It trains the recipe for
about `--steps` steps (whole epochs over DIR) with `augment.pipeline` as the recipe says (auto: timed both
ways over the first steps on CUDA, the faster kept: pretrain/data/pipeline_choice.py), logging every step, and
reports the median img/s, data-wait fraction and device-side augmentation ms of the steps after the first
fifth (warm-up) and after auto's trial, and which pipeline auto chose with both its figures. With
`--step-rate` (the random-tensor step rate of bench/pretrain_step.py, same recipe and batch) it adds
`end_to_end_over_step_rate`; goal (issue 19): >= 0.95. The figures are printed last, as one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import tempfile
from pathlib import Path

import torch

from pretrain.config import load_recipe
from pretrain.loop.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--recipe", default="moco_v2_r50_200ep")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--pipeline", default="", help="override augment.pipeline (auto, cpu, gpu)")
    parser.add_argument("--step-rate", type=float, default=0.0)
    args = parser.parse_args()
    from hexa_zoo.data import ImageFolderDataset

    epochs = max(1, math.ceil(args.steps * args.batch / len(ImageFolderDataset(args.data))))
    with tempfile.TemporaryDirectory() as out:
        sets = [f"data={args.data}", f"out={out}", f"batch_size={args.batch}", f"workers={args.workers}",
                f"epochs={epochs}", "log_every_steps=1", "checkpoint_every_steps=0",
                "tensorboard=false", "progress=false", "publish=false", "warmup_epochs=0"]
        if args.pipeline:
            sets.append(f"augment.pipeline={args.pipeline}")
        cfg = load_recipe(args.recipe, sets)
        result = train(cfg)
        with open(Path(out) / "log.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    trial = [n for n in result.final_logs["notes"] if n.startswith("augment.pipeline=auto chose")]
    timed = rows[max(len(rows) // 5, 2 * cfg.augment.pipeline_trial_steps if trial else 0):] or rows[-1:]
    figures = {"benchmark": "train_throughput", "recipe": args.recipe, "batch": args.batch, "workers": args.workers,
               "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "steps": len(rows),
               "pipeline": args.pipeline or cfg.augment.pipeline,
               "img_per_s": round(statistics.median(float(r["img_per_s"]) for r in timed), 1),
               "data_wait": round(statistics.median(float(r["data_wait"]) for r in timed), 3),
               "augment_ms": round(statistics.median(float(r["augment_ms"]) for r in timed), 2),
               "auto_trial": trial[0] if trial else None}
    if args.step_rate:
        figures["step_rate"] = args.step_rate
        figures["end_to_end_over_step_rate"] = round(figures["img_per_s"] / args.step_rate, 3)
        figures["goal_0.95x_of_step_rate"] = figures["end_to_end_over_step_rate"] >= 0.95
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
