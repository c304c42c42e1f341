"""Benchmark (not a test): how much harder than the clean view each hard view is, for a trained run.

    .venv/bin/python bench/hardness.py --run runs/hexa_moco_r18 [--batch 64] [--eps 2 4 8 16] [--batches 4]

It reads the run's config.yaml and newest checkpoint (any catalog method), takes batches of the run's own
training views (seeded), computes each batch's pseudo-labels once (the method's `clean_step`, BN statistics
frozen, nothing enqueued), then measures, for every eps (in 1/255 pixel units), the rise of the anchor
view's loss (`view_loss` minus its clean value, in nats) under:

- free: one sign step of 1.25 eps from a random start, taken with the clean input gradient (HEXA's default
  where the method's clean loss is the anchor's own, e.g. MoCo);
- fgsm: the same step with the gradient taken at the random start (a true one-step attack);
- pgd10: ten steps of 2.5 eps / 10 from a random start;
- noise: a uniform random point of the same ball (no attack);
and, once, the CutMix view (lambda ~ Beta(1, 1)). Means over the batches are printed as a Markdown table
and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from pretrain.loop.checkpoint import list_checkpoints
from pretrain.config import load_recipe
from pretrain.data.device_augment import finish_views
from pretrain.methods.hard_views import adversarial_view, cutmix, frozen_bn_stats
from pretrain.data.sampling import build_dataset
from pretrain.config import build_method


def load_run(run: Path):
    cfg = load_recipe(run / "config.yaml", ["workers=0"])
    data, _, _ = build_dataset(cfg)
    steps_per_epoch = max(1, len(data) // cfg.batch_size)
    cfg, _ = cfg.fitted(len(data), world_size=1, steps_per_epoch=steps_per_epoch)
    method = build_method(cfg, len(data), steps_per_epoch)
    ckpt = torch.load(list_checkpoints(run)[-1], map_location="cpu", weights_only=True)
    method.load_state_dict(ckpt["model"])
    data.set_epoch(max(0, ckpt["epoch"] - 1))
    return cfg, method, data


def batch_of(data, start: int, size: int):
    """Views in [0, 1] of `size` training images, as the trainer gets them (the CPU pipeline)."""
    items = [data[i] for i in range(start, start + size)]
    views = [torch.stack([item[0][v] for item in items]) for v in range(len(items[0][0]))]
    return finish_views(views, torch.device("cpu")), torch.tensor([item[2] for item in items])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a hexa pretrain --out folder")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--eps", type=float, nargs="+", default=[2, 4, 8, 16], help="radii in 1/255 units")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed), np.random.seed(args.seed)
    cfg, method, data = load_run(args.run)
    method.train()
    rise: dict[str, list[float]] = {}
    for b in range(args.batches):
        views, index = batch_of(data, b * args.batch, args.batch)
        anchor = views[0]
        with frozen_bn_stats(method), torch.no_grad():
            _, targets, _ = method.clean_step(views, index)
            clean = method.view_loss(anchor, targets, wrapped=False).item()
        x = anchor.clone().requires_grad_(True)
        with frozen_bn_stats(method), torch.enable_grad():
            grad, = torch.autograd.grad(method.view_loss(x, targets, wrapped=False), x)

        def hardness(view: torch.Tensor) -> float:
            with frozen_bn_stats(method), torch.no_grad():
                return method.view_loss(view, targets, wrapped=False).item() - clean

        def attack(eps: float, steps: int, input_grad=None) -> torch.Tensor:
            return adversarial_view(anchor, lambda v: method.view_loss(v, targets, wrapped=False),
                                    dataclasses.replace(cfg.hard_views, eps=eps, steps=steps, alpha=None),
                                    input_grad=input_grad, model=method)

        for eps in args.eps:
            e = eps / 255
            found = {
                "free": attack(e, 1, input_grad=grad),
                "fgsm": attack(e, 1),
                "pgd10": attack(e, 10),
                "noise": (anchor + torch.empty_like(anchor).uniform_(-e, e)).clamp(0, 1),
            }
            for kind, view in found.items():
                rise.setdefault(f"{kind}@{eps:g}", []).append(hardness(view))
        for _ in range(4):
            x_mix, perm, lam = cutmix(anchor, cfg.hard_views.cutmix_alpha)
            with frozen_bn_stats(method), torch.no_grad():
                loss = method.view_loss(x_mix, method.mix_targets(targets, perm, lam), wrapped=False).item()
            rise.setdefault("cutmix", []).append(loss - clean)

    means = {k: round(statistics.mean(v), 4) for k, v in rise.items()}
    print("| eps (/255) | free step | FGSM | PGD-10 | uniform noise |\n|---:|---:|---:|---:|---:|")
    for eps in args.eps:
        print(f"| {eps:g} | " + " | ".join(f"{means[f'{k}@{eps:g}']:+.3f}" for k in ("free", "fgsm", "pgd10", "noise"))
              + " |")
    print(f"CutMix view: {means['cutmix']:+.3f} nats over the clean anchor")
    print(json.dumps({"benchmark": "hardness", "run": str(args.run), "method": cfg.method, "batch": args.batch,
                      "batches": args.batches, "loss_rise_nats": means}))


if __name__ == "__main__":
    main()
