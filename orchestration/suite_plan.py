"""`hexa transfer suite ... --plan`: what a transfer suite would run and its GPU-hours from the measured step rates;
nothing runs.

The `hexa` router sends a suite's `--plan` here: the rates are orchestration's (`step_rates.csv`, as `hexa study
--plan` reads them) and transfer/ is a floor below, so it may not read them itself. The arguments are parsed by
`hexa transfer`'s own parser, so a plan and the run it prices take the same command line.

Each run's work is the images its trunk sees: forwards of frozen features (many-shot linear: every split once,
cached; CD-FSL episodes: every image once, cached) at the `features` rate, and fine-tuning's training images
(one 5000-step run of batch 64 per (lr, wd) of the grid, plus the refit on train + val) at the supervised step rate,
with its evaluation forwards at the features rate. Dataset sizes are counted from the data where `--data-for`
points at it, else taken from the datasets' standard splits (`SIZES`). The paper suite's work is
orchestration/plan.py's `suite_work`.
"""

from __future__ import annotations

from pathlib import Path

from hexa_zoo.errors import ConfigError

from .plan import suite_work
from .step_rates import TABLE, read_rates, workload_rate

# (train, val, test) images as the transfer readers split each dataset; val 0 where a seeded 20% of train is
# held out (the many-shot papers' splits: Kornblith et al. 2019 Table A1); CD-FSL: all images, as the CD-FSL
# paper (Guo et al. 2020) lists them.
SIZES = {
    "aircraft": (3334, 3333, 3333), "caltech101": (3060, 0, 6084), "cars": (8144, 0, 8041),
    "cifar10": (50000, 0, 10000), "cifar100": (50000, 0, 10000), "dtd": (1880, 1880, 1880),
    "flowers": (1020, 1020, 6149), "food": (75750, 0, 25250), "pets": (3680, 0, 3669), "sun397": (19850, 0, 19850),
    "voc2007": (2501, 2510, 4952),
    "cropdiseases": (43456, 0, 0), "eurosat": (27000, 0, 0), "isic": (10015, 0, 0), "chestx": (25848, 0, 0),
}


def dataset_sizes(run) -> tuple[tuple[int, int, int], str]:
    """((train, val, test), how it is known) of an ssl-transfer suite run's data."""
    root = Path(run.data)
    if run.data == "embedded" or root.is_dir():
        from hexa_zoo.embedded import resolve_data

        root = resolve_data(run.data)
        if run.protocol == "fewshot":
            from transfer.readers.cdfsl import read_cdfsl
            from transfer.readers.images import read_image_split

            images = read_image_split(root, "fewshot") if run.data == "embedded" else read_cdfsl(root)[1]
            return (len(images.paths), 0, 0), "counted"
        from transfer.readers.manyshot import read_manyshot

        d = read_manyshot(run.dataset, root)
        return (len(d.train.labels), len(d.val.labels) if d.val is not None else 0, len(d.test.labels)), "counted"
    return SIZES[run.dataset], "standard splits"


def ssl_transfer_work(run) -> tuple[float, float, str]:
    """(images forward, images trained, how the sizes are known) of one ssl-transfer suite run at its preset."""
    (train, val, test), how = dataset_sizes(run)
    if run.protocol == "finetune":
        from transfer.protocols.finetune import PRESETS, grid

        cfg = PRESETS[run.preset]
        held_out = val or int(cfg.val_fraction * train)  # split_validation: floor(fraction x n)
        points = len(grid(cfg))
        return points * held_out + test, (points + 1) * cfg.steps * cfg.batch_size, how
    return train + val + test, 0, how  # manyshot and fewshot: each image's features once


def plan_rows(args) -> tuple[list[dict], list[str]]:
    """One row per run of the suite the arguments name, and the lines of what is not counted."""
    if args.suite == "ssl-transfer":
        from transfer.ssl_transfer_suite import parse_data_for, plan_runs
        from transfer.suite import split_names

        runs, left_out = plan_runs(parse_data_for(args.data_for, args.data), split_names(args.only),
                                   split_names(args.skip))
        rows = []
        for r in runs:
            forward, trained, how = ssl_transfer_work(r)
            rows.append(dict(run=r.label, preset=r.preset, data=r.data, sizes=how, forward=forward, trained=trained))
        return rows, [f"not run: {line}" for line in left_out]
    if args.suite == "paper":
        rows, left_out = [], []
        for name, work in suite_work("paper").items():
            if work is None:
                left_out.append(f"{name}: no measured rate yet")
            else:
                rows.append(dict(run=name, preset="paper", data="ImageNet / VOC07", sizes="standard splits",
                                 forward=work[1] if work[0] == "forward" else 0,
                                 trained=work[1] if work[0] == "train" else 0))
        return rows, [f"not counted: {line}" for line in left_out]
    raise ConfigError("the embedded suite runs on the CPU in minutes: --plan prices the GPU-scale suites",
                      "use --suite ssl-transfer or --suite paper with --plan")


def render(rows: list[dict], left_out: list[str], gpu: str, forward_rate: float, train_rate: float) -> str:
    lines = ["| run | preset | data | sizes | images forward | images trained | GPU-h |",
             "|---|---|---|---|---:|---:|---:|"]
    total = 0.0
    for r in rows:
        hours = (r["forward"] / forward_rate + r["trained"] / train_rate) / 3600
        total += hours
        lines.append(f"| {r['run']} | {r['preset']} | {r['data']} | {r['sizes']} | {r['forward']:,.0f} | "
                     f"{r['trained']:,.0f} | {hours:.2f} |")
    lines += ["", f"Total: **{total:.2f} GPU-hours** for {len(rows)} run(s) on {gpu} (frozen forwards at "
              f"{forward_rate:g} img/s, training at {train_rate:g} img/s, 224 px, batch 256, GPU-bound: data loading, "
              "the CPU's logistic-regression sweeps and smaller batches come on top).", *left_out]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse a `hexa transfer suite ... --plan` command line and print its plan."""
    from transfer.cli import _parser

    args = _parser().parse_args(argv)
    rates = read_rates(TABLE)
    forward, train = workload_rate(rates, "features"), workload_rate(rates, "supervised")
    if forward is None or train is None:
        raise ConfigError(f"{TABLE} has no `features` or `supervised` rate to price a transfer suite with",
                          "run bench/gpu_check.sh on a GPU and regenerate it: python -m orchestration.step_rates")
    rows, left_out = plan_rows(args)
    gpu = next(r.gpu for r in rates if r.workload == "features")
    print(f"# Plan: hexa transfer {' '.join(argv or [])}\n")
    print(render(rows, left_out, gpu, forward, train))
    return 0
