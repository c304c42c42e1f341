"""`hexa demo` (what `make demo` runs): the whole mission on the embedded dataset, on a CPU.

    pre-train MoCo-v2 and HEXA_MoCo (same seed, same budget)   -> <out>/runs/<method>/ and the local zoo
    run the embedded transfer suite on each, and on the same
    trunk untrained (timm's initialisation under the seed)       -> <out>/results/*.json
    compile the leaderboard                                      -> <out>/leaderboard/README.md, plots/
    print HEXA against its baseline and the untrained trunk, whatever the runs give

`--budget 1.0` takes about nine minutes on two CPU cores (506 s from a fresh clone). The budget scales pre-training as
`budget x EPOCHS_AT_BUDGET_1` passes over the embedded training images (below one pass: one epoch on a
seeded subset), the same for every method. Below FULL_SUITE_BUDGET the transfer protocols run with
smaller sizes (`--set`, recorded in each record's config); from it on, the embedded suite runs as it is.
From DCLUSTER_MIN_BUDGET on, the DeepCluster pair joins.

A second `hexa demo` reuses what is done: a pre-training run is done when its zoo folder exists and its
model card's recipe is this plan's (method, epochs, images, seed); a protocol is done when a record of
it exists for exactly those weights. `--force` redoes everything (records are only ever added; the
leaderboard counts each seed once, the newest record first).

It stands on every floor below it and calls their jobs directly: pretrain's `load_recipe` and `train`,
transfer's `run_suite`, the leaderboard's `compile_leaderboard`. They are imported inside functions,
so `hexa demo --help` is instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hexa_zoo.catalog import EPOCHS_AT_BUDGET_1, METHODS, hexa_pairs, zoo_model_name
from hexa_zoo.errors import ConfigError

from .demo_transfer import run_transfer, trunk_identity, untrained_trunk

DCLUSTER_MIN_BUDGET = 2.0      # the DeepCluster pair roughly doubles the time: it joins from here on
MIN_IMAGES = 64                # below one epoch, never train on fewer images than this


@dataclass(frozen=True)
class PretrainStep:
    """One pre-training run of the demo and where its outputs go."""
    method: str
    recipe: str            # name in pretrain/configs/
    arch: str
    epochs: int
    limit_images: int      # 0 = every training image
    seed: int
    run_dir: Path
    model: str             # zoo name with tag, e.g. hexa_moco_r18.embedded
    log_every: int = 5     # log.csv rows: often enough that even a tiny run draws a curve
    zoo: Path | None = None  # the zoo it publishes to (--zoo); None: the local zoo, HEXA_ZOO_HOME

    def recipe_values(self) -> dict:
        """The recipe values that make two runs the same run (what reuse compares with the model card)."""
        return {"method": self.method, "arch": self.arch, "data": "embedded", "epochs": self.epochs,
                "limit_images": self.limit_images, "seed": self.seed}


def default_methods(budget: float) -> tuple[str, ...]:
    """The MoCo pair always; the DeepCluster pair too from DCLUSTER_MIN_BUDGET on."""
    baselines = ("moco_v2",) + (("dcluster_v2",) if budget >= DCLUSTER_MIN_BUDGET else ())
    return tuple(m for base, hexa in hexa_pairs() if base in baselines for m in (base, hexa))


def scale_epochs(budget: float, epochs_at_1: int, train_images: int) -> tuple[int, int]:
    """(epochs, limit_images) for a budget: `budget x epochs_at_1` passes over the data.

    At least one pass: `epochs = round(passes)`; below one: one epoch on `passes x images` images
    (never fewer than MIN_IMAGES), so a tiny budget still runs the whole pipeline, just on less data.
    """
    passes = budget * epochs_at_1
    if passes >= 1:
        return max(1, round(passes)), 0
    return 1, min(train_images, max(MIN_IMAGES, math.ceil(passes * train_images)))


def plan(budget: float, methods: Sequence[str], seed: int, out: Path, zoo: Path | None = None) -> list[PretrainStep]:
    """One pre-training step per method, each from its embedded recipe, all with the same seed and budget."""
    from hexa_zoo.embedded import embedded_root
    from pretrain.config import load_recipe

    train_images = sum(1 for p in (embedded_root() / "classify" / "train").rglob("*.png"))
    steps = []
    for method in methods:
        recipe = METHODS[method].default_recipe("embedded")
        cfg = load_recipe(recipe)
        epochs, limit = scale_epochs(budget, EPOCHS_AT_BUDGET_1, train_images)
        total_steps = max(1, (limit or train_images) // cfg.batch_size) * epochs
        tag = dataclasses.replace(cfg, data="embedded", epochs=epochs, limit_images=limit).resolved_tag()
        steps.append(PretrainStep(method, recipe, cfg.arch, epochs, limit, seed, out / "runs" / method,
                                  f"{zoo_model_name(method, cfg.arch)}.{tag}",
                                  log_every=max(1, min(cfg.log_every_steps, total_steps // 20)), zoo=zoo))
    return steps


# ------------------------------------------------------------------------------------ pre-training

def zoo_folder(step: PretrainStep) -> Path:
    """Where the trainer publishes this step's trunk (`<zoo>/<model>.<tag>`: "embedded" only for the recipe's length)."""
    from hexa_zoo.weights import zoo_folder as folder_in_zoo

    name, tag = step.model.split(".", 1)
    return folder_in_zoo(name, tag, step.zoo)


def transfer_spec(step: PretrainStep) -> str:
    """The `--model` its transfer suite loads: the registered name from the local zoo, the folder itself from a
    zoo of its own (--zoo)."""
    return step.model if step.zoo is None else str(zoo_folder(step))


def published_recipe(step: PretrainStep) -> dict | None:
    """The recipe the zoo folder's card records (else the run folder's config.yaml), or None."""
    from hexa_zoo.publish import recipe_of

    folder = zoo_folder(step)
    if not (folder / "model.safetensors").is_file():
        return None
    recipe = recipe_of(folder)
    if "method" in recipe:
        return recipe
    import yaml

    saved = step.run_dir / "config.yaml"
    try:
        loaded = yaml.safe_load(saved.read_text()) if saved.is_file() else None
    except yaml.YAMLError:
        loaded = None
    return loaded if isinstance(loaded, dict) else None


def pretrain_done(step: PretrainStep) -> bool:
    """True when the zoo folder exists and was published by a run with this step's recipe values."""
    recipe = published_recipe(step)
    return recipe is not None and all(recipe.get(k) == v for k, v in step.recipe_values().items())


def pretrain_config(step: PretrainStep, overwrite: bool = False):
    """The step's PretrainConfig: its embedded recipe with this budget's epochs, images, seed and log rate
    (through `load_recipe`, so a shorter run scales the recipe's epoch-counted schedule as `hexa pretrain` does)."""
    from pretrain.config import load_recipe

    return load_recipe(step.recipe, [f"method={step.method}", "data=embedded", f"out={step.run_dir}",
                                     f"epochs={step.epochs}", f"seed={step.seed}", f"limit_images={step.limit_images}",
                                     f"log_every_steps={step.log_every}", f"overwrite={str(overwrite).lower()}",
                                     *([f"zoo={step.zoo}"] if step.zoo is not None else [])])


def run_pretrain(step: PretrainStep, force: bool = False) -> None:
    """Train and publish in this process (resume "auto": an interrupted demo continues where it stopped).

    A zoo folder of the same name from another run is replaced only under `--force`, else refused now."""
    from pretrain.loop.trainer import train

    if not force and zoo_folder(step).exists():
        raise ConfigError(f"the zoo already holds {step.model} at {zoo_folder(step)}, published by another run "
                          f"(not this demo's recipe: {step.recipe_values()})",
                          "pass --force to retrain and replace it, or --zoo DIR to give this demo a zoo of its own")
    result = train(pretrain_config(step, overwrite=force), resume="auto")
    if result.zoo_dir is None or not pretrain_done(step):
        raise RuntimeError(f"pre-training {step.method} ({step.recipe}) did not publish {zoo_folder(step)}")
    print(f"published {result.model} -> {result.zoo_dir}")
    print(f"load it: {result.load_hint}")


# ------------------------------------------------------------------------------------ comparison

def comparison_lines(compiled, current: dict[str, str], untrained: str | None = None) -> list[str]:
    """HEXA against its baseline on this demo's weights, one line per table and metric, beside the number
    of the untrained trunk (`untrained`: its model name in the records) where it has one row in that table."""
    from leaderboards.figures import hexa_vs_baseline_pairs

    tables = {}
    for table, frame in compiled.tables.items():
        ours = frame[frame["kind"] == "ours"]
        keep = ours[[current.get(m, "")[:12] == w for m, w in zip(ours["model"], ours["weights"])]]
        if len(keep):
            tables[table] = keep
    pairs = hexa_vs_baseline_pairs(tables, compiled.metrics)

    def reference(label: str) -> str:
        table, metric = label.split("\n")
        rows = tables[table][tables[table]["model"] == untrained] if table in tables else []
        return f"{rows.iloc[0][metric]:.2f}" if len(rows) == 1 else "-"

    lines = []
    for title, bars in sorted(pairs.items()):
        hexa, base = title.split(" vs ")
        rows = [(*label.split("\n"), f"{b_mean:.2f}", f"{h_mean:.2f}", f"{round(h_mean - b_mean, 2) + 0.0:+.2f}",
                 reference(label)) for label, h_mean, _, b_mean, _ in bars]
        header = ("table", "metric", base, hexa, "HEXA - base", "untrained")
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(6)]
        for r in [header] + rows:
            lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        lines.append("")
    return lines[:-1]


# ------------------------------------------------------------------------------------ command line

ONE_SEED_NOTE = ("  One seed of each method: a HEXA - base difference mixes the methods with seed-to-seed noise,\n"
                 "  which one run cannot measure, so this demo cannot tell HEXA from its baseline; 3 seeds of\n"
                 "  `hexa study` can (README, section 5). Against the untrained trunk, see the README's spread over 3 seeds.")

EPILOG = """examples:
  hexa demo                      # about 9 minutes on 2 CPU cores: MoCo-v2 vs HEXA_MoCo, end to end
  hexa demo --budget 0.1         # a smoke run of the same pipeline in a few minutes
  hexa demo --budget 3           # longer pre-training, and the DeepCluster pair too
  hexa demo --methods moco_v2 hexa_moco dcluster_v2 hexa_dcluster --out /tmp/demo
  hexa demo --force              # redo every step instead of reusing finished ones

Everything goes under --out (default ./hexa_demo): runs/ (checkpoints, log.csv), results/ (records),
leaderboard/ (README.md, tables, plots). Trunks are published to the local zoo (HEXA_ZOO_HOME, or --zoo).
"""


def build_parser() -> argparse.ArgumentParser:
    """The `hexa demo` argument parser."""
    p = argparse.ArgumentParser(prog="hexa demo", description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=1.0,
                   help=f"scale of the run: 1.0 is about 9 minutes on 2 cores (DeepCluster pair from "
                        f"{DCLUSTER_MIN_BUDGET:g})")
    p.add_argument("--out", default="hexa_demo", help="folder for runs, results and the leaderboard")
    p.add_argument("--zoo", help="local zoo to publish to (default: HEXA_ZOO_HOME, else ~/.cache/hexa_zoo)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), help="methods to pre-train (default by budget)")
    p.add_argument("--protocols", nargs="+", metavar="PROTOCOL",
                   help="transfer protocols to run (default: the whole embedded suite), e.g. knn fewshot")
    p.add_argument("--seed", type=int, default=0, help="one seed for every method and protocol")
    p.add_argument("--force", action="store_true", help="redo finished steps instead of reusing them")
    return p


def main(argv: list[str] | None = None) -> int:
    """`hexa demo`: pre-train, publish, transfer, compile and compare; finished steps are reused."""
    args = build_parser().parse_args(argv)
    if not args.budget > 0:
        raise ConfigError(f"--budget must be positive, got {args.budget}", "try --budget 1 (about 9 minutes)")
    methods = tuple(args.methods or default_methods(args.budget))
    if args.protocols:
        from transfer.protocols import PROTOCOLS

        unknown = sorted(set(args.protocols) - set(PROTOCOLS))
        if unknown:
            raise ConfigError(f"unknown transfer protocol(s) {unknown}", f"choose from: {', '.join(PROTOCOLS)}")
    out = Path(args.out)
    return _run(args, methods, out)


def _run(args, methods: Sequence[str], out: Path) -> int:
    from leaderboards.compiler import compile_leaderboard

    t0 = time.perf_counter()
    steps = plan(args.budget, methods, args.seed, out, Path(args.zoo).resolve() if args.zoo else None)
    total = 2 * len(steps) + 2  # pre-train and transfer each method, transfer the untrained trunk, compile
    n = 0

    def say(text: str) -> None:
        nonlocal n
        n += 1
        print(f"[demo {n}/{total}, {time.perf_counter() - t0:5.0f} s] {text}", flush=True)

    for step in steps:
        data = f"{step.limit_images} images" if step.limit_images else "all training images"
        if not args.force and pretrain_done(step):
            say(f"pre-train {step.method}: reusing {zoo_folder(step)} (same recipe, {step.epochs} epoch(s), {data})")
            continue
        say(f"pre-train {step.method} ({step.arch}, {step.epochs} epoch(s), {data}, seed {step.seed}) "
            f"-> {step.run_dir}")
        if args.force and step.run_dir.exists():
            shutil.rmtree(step.run_dir)
        run_pretrain(step, force=args.force)

    results = out / "results"
    current = {}
    untrained = str(untrained_trunk(steps[0].arch, args.seed, out))
    for model in [transfer_spec(step) for step in steps] + [untrained]:
        say(f"transfer suite on {Path(model).name} -> {results}")
        name, sha = trunk_identity(model)  # loads the trunk once: its records' name and weights hash
        failed = run_transfer(model, (name, sha), args.seed, results, args.budget, force=args.force,
                              protocols=args.protocols)
        if failed:
            print(f"       failed on {model}: {', '.join(failed)} (see above); the leaderboard shows the rest")
        current[name] = sha

    say(f"compile the leaderboard -> {out / 'leaderboard'}")
    compiled = compile_leaderboard([results], out / "leaderboard", runs=[out / "runs"], zoo=steps[0].zoo)
    lines = comparison_lines(compiled, current, untrained=Path(untrained).name)
    print()
    print(f"HEXA against its baseline on the embedded dataset (seed {args.seed}, budget {args.budget:g}), beside "
          f"the untrained {steps[0].arch}; the numbers are whatever these runs gave:")
    print("\n".join("  " + line for line in lines) if lines else "  (no HEXA/baseline pair among --methods)")
    if lines:
        print(ONE_SEED_NOTE)
    print(f"\nleaderboard: {compiled.readme}\nweb page:    {compiled.site}")
    plots = sorted((out / "leaderboard" / "plots").glob("*.png"))
    print("plots:       " + ("\n             ".join(str(p) for p in plots) if plots else "(none)"))
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0
