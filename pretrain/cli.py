"""`hexa pretrain`: self-supervised pre-training from the command line (one process or torchrun DDP)."""

from __future__ import annotations

import argparse
import logging

from hexa_zoo.catalog import METHODS

EPILOG = """\
examples:
  # MoCo-v2 with hard views on the embedded dataset, CPU, a few minutes
  hexa pretrain --method hexa_moco --arch resnet18 --data embedded --out runs/hexa_moco_r18

  # a paper recipe on ImageNet's train folder, 8 GPUs on one machine
  torchrun --nproc_per_node 8 -m hexa_zoo pretrain --config hexa_moco_r50_200ep \\
      --data /data/imagenet/train --out runs/hexa_moco_r50

  # two machines with 8 GPUs each (run on both; --node_rank 0 on the first, 1 on the second)
  torchrun --nnodes 2 --nproc_per_node 8 --node_rank 0 --rdzv_backend c10d \\
      --rdzv_endpoint HOST0:29500 -m hexa_zoo pretrain --config dcluster_v2_r50_800ep \\
      --data /data/imagenet/train --out /shared/runs/dc2_r50

  # continue after an interruption (same --out), and override recipe values
  hexa pretrain --config moco_v2_r18_embedded --out runs/m --resume auto --set lr=0.06 --set moco.queue_size=1024

Without --config the recipe is chosen by method: the *_r18_embedded one for --data embedded, else the
paper's (the catalog's `paper_recipe`: """ + ", ".join(m.default_recipe("imagenet") for m in METHODS.values()) + """).
--batch-size is the global batch (split over processes); the lr scales with it linearly. A run shorter
than its recipe scales the recipe's warm-up and other epoch-counted schedule values with it.
At the end the trunk is published to the local zoo as <method>_r18/_r50 under a tag that says what ran
("embedded" for the embedded recipe as it is, else embedded_ep<epochs> or <data>_ep<epochs>, with _img<N>
for a limit_images subset; --set tag=NAME to choose), and the last line says how to load it. A name.tag
already in the zoo is refused before the first step (--overwrite replaces it; --resume auto continues the
run that published it). --set limit_images=N trains on a seeded subset of N images.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hexa pretrain", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Pre-train MoCo-v2, DeepCluster-v2 or their HEXA variants and publish the trunk to the zoo.")
    parser.add_argument("--method", choices=list(METHODS), help="training method (default: the recipe's, or moco_v2)")
    parser.add_argument("--arch", help="timm backbone name, e.g. resnet18, resnet50 (default: the recipe's)")
    parser.add_argument("--data", help="'embedded' or a folder of images (ImageFolder tree or flat)")
    parser.add_argument("--out", help="run folder: config, checkpoints, log.csv, TensorBoard events")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="global batch size over all processes")
    parser.add_argument("--config", help="recipe name in pretrain/configs (e.g. moco_v2_r50_200ep) or a YAML path")
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override recipe values, e.g. --set lr=0.06 moco.queue_size=4096 (repeatable)")
    parser.add_argument("--resume", metavar="auto|PATH",
                        help="'auto' continues from the newest checkpoint in --out, or give a checkpoint file")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing zoo folder of the same name.tag (refused before training otherwise)")
    parser.add_argument("--list-recipes", action="store_true", help="print the shipped recipe names and exit")
    return parser


def main(argv: list[str]) -> int:
    from .config import default_recipe, load_recipe, recipe_names

    args = build_parser().parse_args(argv)
    if args.list_recipes:
        print("\n".join(recipe_names()))
        return 0
    recipe = args.config or default_recipe(args.method or "moco_v2", args.data or "embedded")
    flags = {"method": args.method, "arch": args.arch, "data": args.data, "out": args.out,
             "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed}
    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None] + list(args.set)
    if args.overwrite:
        overrides.append("overwrite=true")
    cfg = load_recipe(recipe, overrides)
    log = logging.getLogger("pretrain")
    log.info("recipe %s -> %s %s on %s, out %s", recipe, cfg.method, cfg.arch, cfg.data, cfg.out)

    from .loop.trainer import train

    result = train(cfg, resume=args.resume)
    if result.zoo_dir is not None:
        print(f"published {result.model} -> {result.zoo_dir}")
        print(f"load it: {result.load_hint}")
    return 0
