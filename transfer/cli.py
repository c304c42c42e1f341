"""`hexa transfer`: run one transfer protocol, or the whole suite, and write result records.

This file only parses arguments, holds the help examples and dispatches to transfer/suite.py. Its sub-commands
are rendered from the protocol table (transfer/protocols/__init__.py: each protocol's module, summary, presets,
readers and options), imported by name like every protocol module it holds.
"""

from __future__ import annotations

import argparse
import logging
import sys

from cluster.jobs import EXECUTORS, add_cluster_arguments, resources
from hexa_zoo.errors import ConfigError

from . import suite
from .protocols import PROTOCOLS
from .suite import RESUMABLE, default_preset, route, split_names, suite_runs, summary

log = logging.getLogger(__name__)

# Each protocol's --help examples: the embedded run first (CPU, minutes), then the published protocol on its
# real dataset. tests/test_help_examples.py runs or parses every one of them.
EXAMPLES = {
    "linear": ["hexa transfer linear --model hexa_moco_r18.embedded --data embedded --out results/ --preset embedded_fast",
               "hexa transfer linear --model moco_v2_r50 --data /data/imagenet --out results/ --resume auto"],
    "knn": ["hexa transfer knn --model hexa_moco_r18.embedded --data embedded --out results/",
            "hexa transfer knn --model moco_v2_r50 --data /data/imagenet --out results/ --set ks=[20,200]"],
    "lowshot-svm": ["hexa transfer lowshot-svm --model hexa_moco_r18.embedded --data embedded --out results/",
                    "hexa transfer lowshot-svm --model moco_v2_r50 --data /data/VOCdevkit --out results/ "
                    "--set cost_selection=test"],
    "semisup": ["hexa transfer semisup --model hexa_moco_r18.embedded --data embedded --out results/",
                "hexa transfer semisup --model moco_v2_r50 --data /data/imagenet --out results/ --set labels=1percent "
                "--resume auto"],
    "fewshot": ["hexa transfer fewshot --model hexa_moco_r18.embedded --data embedded --out results/",
                "hexa transfer fewshot --model moco_v2_r50 --preset cdfsl --data /data/EuroSAT --out results/"],
    "detection": ["hexa transfer detection --model hexa_moco_r18.embedded --data embedded --out results/",
                  "hexa transfer detection --model moco_v2_r50 --data /data/VOCdevkit --out results/ --resume auto"],
    "manyshot": ["hexa transfer manyshot --model hexa_moco_r18.embedded --dataset embedded --data embedded --out results/",
                 "hexa transfer manyshot --model moco_v2_r50 --dataset dtd --data /data/dtd --out results/"],
    "adversarial": ["hexa transfer adversarial --model hexa_moco_r18.embedded --data embedded --out results/",
                    "hexa transfer adversarial --model moco_v2_r50 --data /data/imagenet --out results/ "
                    "--head results/linear-moco_v2_r50.json"],
    "robustness": ["hexa transfer robustness --model hexa_moco_r18.embedded --dataset embedded-c --data embedded "
                   "--out results/",
                   "hexa transfer robustness --model moco_v2_r50 --dataset imagenet-r --data /data/imagenet-r "
                   "--out results/ --head results/linear-moco_v2_r50.json"],
    "finetune": ["hexa transfer finetune --model hexa_moco_r18.embedded --dataset embedded --data embedded --out results/",
                 "hexa transfer finetune --model moco_v2_r50 --dataset flowers --data /data/flowers --out results/ "
                 "--resume auto"],
    "suite": ["hexa transfer suite --model hexa_moco_r18.embedded --suite embedded --out results/",
              "hexa transfer suite --model moco_v2_r50 --suite paper --out results/ --data-for linear=/data/imagenet "
              "--data-for knn=/data/imagenet --data-for lowshot-svm=/data/VOCdevkit",
              "hexa transfer suite --model byol_r50.in1k_ep1000 --suite ssl-transfer --out results/ "
              "--data-for dtd=/data/dtd --data-for eurosat=/data/EuroSAT --plan"],
}

# One `--set` example per protocol, with keys it has.
SET_EXAMPLES = {"linear": "epochs=5 lr=0.1", "knn": "ks=[10,20] max_per_class=50", "lowshot-svm": "num_samples=2",
                "semisup": "epochs=5 labels=1percent", "fewshot": "episodes=100", "detection": "max_iter=100",
                "manyshot": "wd_values=8", "adversarial": "steps=5", "robustness": "severities=[1,3,5]",
                "finetune": "steps=100"}

NOTES = """
--model takes a registered name (weights from the local zoo or the Hub), a zoo folder, a .safetensors
file, or a MoCo/SwAV/DeepCluster/hexa checkpoint. --data takes `embedded` or a dataset path in the
layout the protocol reads (ImageFolder train/ + val/ for linear, knn, semisup; a VOCdevkit for
lowshot-svm and VOC detection; a folder of held-out class folders for fewshot). Without --preset the
preset follows the data: paper on a path, embedded on --data embedded.
Each run writes one JSON result record into --out; `hexa leaderboard --results DIR --out DIR` compiles them.
"""


def _examples(names) -> str:
    lines = [line for name in names for line in EXAMPLES[name]]
    return "examples:\n" + "\n".join(f"  {line}" for line in lines) + "\n" + NOTES


EPILOG = _examples(EXAMPLES)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hexa transfer", description="Transfer evaluation of a frozen or "
                                     "fine-tuned trunk; each run writes one result record.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    for name, protocol in PROTOCOLS.items():
        p = sub.add_parser(name, help=protocol.summary, description=protocol.summary, epilog=_examples([name]),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--model", required=True, help="registered name[.tag], zoo folder, .safetensors or checkpoint")
        p.add_argument("--data", required=True, help="`embedded` or a dataset path")
        p.add_argument("--out", required=True, help="results folder (records are added, never overwritten)")
        presets = ", ".join(protocol.presets)
        p.add_argument("--preset", default=None, metavar="NAME",
                       help=f"named protocol constants, one of: {presets} (default: paper on a dataset path, "
                            "embedded on --data embedded)")
        p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                       help=f"override config values, e.g. --set {SET_EXAMPLES[name]} (repeatable)")
        p.add_argument("--seed", type=int, default=0)
        if protocol.datasets:
            p.add_argument("--dataset", choices=protocol.datasets, default=None,
                           help="which dataset --data holds (the same as --set dataset=NAME)")
        if protocol.resumes:
            p.add_argument("--resume", choices=("auto",), default=None,
                           help="checkpoint as it trains and continue a killed run with the same arguments")
        if protocol.head:
            p.add_argument("--head", default=None, help="the record of a `hexa transfer linear` run (or the "
                           "heads/*.safetensors it wrote); " + protocol.head)
    s = sub.add_parser("suite", help="run every protocol with its embedded or paper preset", epilog=_examples(["suite"]),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--model", required=True)
    s.add_argument("--suite", choices=(*suite.SUITES, "ssl-transfer"), default="embedded",
                   help="embedded: CPU-size presets; paper: the HEXA paper's protocols; ssl-transfer: every "
                        "evaluation of ssl-transfer's tables implemented here, on the --data-for DATASET=PATH given "
                        "(transfer/ssl_transfer_suite.py)")
    s.add_argument("--out", required=True)
    s.add_argument("--data", default=None, help="dataset for every protocol (default: embedded for the embedded "
                   "suite; the paper suite needs --data or --data-for)")
    s.add_argument("--data-for", action="append", default=[], metavar="PROTOCOL=PATH",
                   help="dataset of one protocol (repeatable); for --suite ssl-transfer: DATASET=PATH, e.g. "
                        "dtd=/datasets/dtd")
    s.add_argument("--only", default=None, help="comma-separated protocols to run (default: all); an extra preset "
                   "of a protocol is named PROTOCOL:PRESET, e.g. fewshot:cdfsl_embedded")
    s.add_argument("--skip", default="", help="comma-separated protocols to leave out")
    s.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="PROTOCOL.KEY=VALUE",
                   help="override protocol config values, e.g. --set knn.max_per_class=50 (repeatable)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--executor", choices=EXECUTORS, default="inline",
                   help="inline: one protocol after another here; local: a process each; slurm: a SLURM job each")
    s.add_argument("--status", action="store_true", help="list each protocol's job: queued, running, done, failed")
    s.add_argument("--plan", action="store_true", help="print what the suite would run and its GPU-hours from the "
                   "measured step rates (orchestration/step_rates.csv); run nothing")
    add_cluster_arguments(s)
    return parser


def _suite_jobs(args) -> int:
    """The suite as one job per protocol (transfer/suite_jobs.py), or their status."""
    from .suite_jobs import protocol_jobs, status_lines, submit_suite

    routed, per_protocol = route(args.overrides, args.data_for)
    runs = suite_runs(args.suite, args.data, per_protocol, split_names(args.only), split_names(args.skip))
    jobs, missing = protocol_jobs(args.model, args.out, runs, routed, args.seed, RESUMABLE)
    if not args.status:
        submit_suite(jobs, args.executor, resources(args), args.parallel)
    print("\n".join(status_lines(jobs)))
    for name, why in missing.items():
        print(f"{name}: FAILED: {why}", file=sys.stderr)
    return 1 if missing else 0


def _ssl_transfer_suite(args) -> int:
    """`--suite ssl-transfer`: one run per evaluation and dataset given (transfer/ssl_transfer_suite.py)."""
    from . import ssl_transfer_suite

    if args.executor != "inline" or args.status:
        raise ConfigError("--suite ssl-transfer runs inline only", "drop --executor/--status, or submit each "
                          "protocol's command (`hexa transfer manyshot ...`) as a job of its own")
    routed, _ = route(args.overrides, ())
    records, failures, left_out = ssl_transfer_suite.run_suite(
        args.model, args.out, ssl_transfer_suite.parse_data_for(args.data_for, args.data),
        only=split_names(args.only), skip=split_names(args.skip), routed=routed, seed=args.seed)
    for record in records:
        print(summary(record))
    for line in left_out:
        print(f"not run: {line}")
    for name, why in failures.items():
        print(f"{name}: FAILED: {why}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.protocol == "suite" and args.plan:  # `hexa` sends --plan to orchestration/suite_plan.py
        raise ConfigError("--plan is answered by the `hexa` command, which prices the suite with the measured "
                          "step rates", "run it as `hexa transfer suite ... --plan`")
    if args.protocol == "suite" and args.suite == "ssl-transfer":
        return _ssl_transfer_suite(args)
    if args.protocol == "suite" and (args.executor != "inline" or args.status):
        return _suite_jobs(args)
    if args.protocol == "suite":
        records, failures = suite.run_suite(args.model, args.suite, args.out, data=args.data,
                                            data_for=args.data_for, only=split_names(args.only),
                                            skip=split_names(args.skip), overrides=args.overrides, seed=args.seed)
        for record in records:
            print(summary(record))
        for name, why in failures.items():
            print(f"{name}: FAILED: {why}", file=sys.stderr)
        return 1 if failures else 0
    overrides = list(args.overrides)
    if getattr(args, "dataset", None):
        overrides.insert(0, f"dataset={args.dataset}")
    if getattr(args, "resume", None):
        overrides.insert(0, f"resume={args.resume}")
    if getattr(args, "head", None):
        overrides.insert(0, f"head={args.head}")
    preset = args.preset or default_preset(args.data)
    if args.preset is None:
        log.info("%s: preset %s (the default for --data %s; --preset NAME to choose)", args.protocol, preset,
                 "embedded" if args.data == "embedded" else "PATH")
    record = suite.run_protocol(args.protocol, args.model, args.data, args.out, preset=preset,
                          overrides=overrides, seed=args.seed)
    if record is not None:  # None: handed off to detectron2 elsewhere, or a non-zero torchrun rank
        print(summary(record))
    return 0
