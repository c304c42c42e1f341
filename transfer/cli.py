"""`hexa transfer`: run one transfer protocol, or the whole suite, and write result records.

Each protocol lives in its own module (`transfer/<name>.py`) with `run(model, data, out, preset=...,
overrides=..., seed=...) -> record`; this file only parses arguments and dispatches, importing the
protocol's module when it is asked for.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from typing import Sequence

from hexa_zoo.errors import ConfigError, HexaError
from hexa_zoo.jobs import EXECUTORS, add_cluster_arguments, resources

log = logging.getLogger(__name__)

# CLI name -> module
PROTOCOLS = {
    "linear": "transfer.linear",
    "knn": "transfer.knn",
    "lowshot-svm": "transfer.lowshot_svm",
    "semisup": "transfer.semisup",
    "fewshot": "transfer.fewshot",
    "detection": "transfer.detection",
    "manyshot": "transfer.manyshot",
    "adversarial": "transfer.adversarial",
    "robustness": "transfer.robustness",
    "finetune": "transfer.finetune",
}

DESCRIPTIONS = {
    "linear": "linear classifier on the frozen trunk (MoCo main_lincls; fast L-BFGS variant)",
    "knn": "weighted cosine kNN on frozen features (k = 20, 200; T = 0.07)",
    "lowshot-svm": "VOC07 low-shot linear SVMs (k = 1..96, 5 samples) and the full-data SVM",
    "semisup": "fine-tune all layers on 1 or 10 percent of the labels (swav eval_semisup)",
    "fewshot": "5-way 1-/5-shot episodes on held-out classes (logistic regression, nearest centroid)",
    "detection": "Faster R-CNN on VOC07+12 or COCO with the trunk as backbone",
    "manyshot": "many-shot linear transfer to 11 datasets (ssl-transfer linear.py: L-BFGS, 45-value C sweep)",
    "adversarial": "accuracy of trunk + linear head under L-inf PGD (eps 1, 2, 4 / 255; 10 steps)",
    "robustness": "trunk + ImageNet linear head on ImageNet-V2/R/A/Sketch/C (mCE against AlexNet's errors)",
    "finetune": "fine-tune trunk + head on a many-shot dataset (ssl-transfer finetune.py: Nesterov SGD, cosine, lr x wd grid)",
}

# Each protocol's presets, for its --help (a test holds them equal to the modules' PRESETS, which the help
# does not import: `--help` stays instant).
PRESET_NAMES = {
    "linear": ("embedded", "embedded_fast", "paper", "paper_fast"),
    "knn": ("embedded", "lightly", "paper", "paper_bilinear", "vissl"),
    "lowshot-svm": ("embedded", "paper", "paper_11point", "paper_gap"),
    "semisup": ("embedded", "paper", "paper_final"),
    "fewshot": ("cdfsl", "cdfsl_embedded", "embedded", "paper"),
    "detection": ("embedded", "paper", "paper_coco"),
    "manyshot": ("embedded", "paper"),
    "adversarial": ("embedded", "paper"),
    "robustness": ("embedded", "paper"),
    "finetune": ("embedded", "paper"),
}

# Protocols that train long enough to checkpoint: `--resume auto` is `--set resume=auto`.
RESUMABLE = ("linear", "semisup", "detection", "finetune")

# Protocols that reuse a linear head: `--head RECORD_OR_FILE` is `--set head=...`.
HEAD_PROTOCOLS = ("adversarial", "robustness")

HEAD_DEFAULT = {"adversarial": "without it a fast linear head is trained first on --data's train split",
                "robustness": "required for the ImageNet sets; on embedded-c without it a fast linear head is "
                              "trained first on the train split"}

# Protocols that read one of several named datasets: `--dataset NAME` is `--set dataset=NAME`.
DATASET_CHOICES = {
    "manyshot": ("aircraft", "caltech101", "cars", "cifar10", "cifar100", "dtd", "flowers", "food", "pets", "sun397",
                 "voc2007", "embedded"),
    "finetune": ("aircraft", "caltech101", "cars", "cifar10", "cifar100", "dtd", "flowers", "food", "pets", "sun397",
                 "voc2007", "embedded"),
    "robustness": ("imagenet-v2", "imagenet-r", "imagenet-a", "imagenet-sketch", "imagenet-c", "embedded-c"),
}

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
              "--data-for knn=/data/imagenet --data-for lowshot-svm=/data/VOCdevkit"],
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


def protocol_module(name: str):
    """The module implementing protocol `name`, or a ConfigError saying it is not available."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown transfer protocol {name!r}", f"choose one of: {', '.join(PROTOCOLS)}")
    module_name = PROTOCOLS[name]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise  # the protocol exists but one of its own imports is missing: a real problem, show it
        raise ConfigError(f"the {name} protocol is not available in this version ({module_name} is missing)",
                          f"run another protocol: {', '.join(p for p in PROTOCOLS if p != name)}") from None


def run_protocol(name: str, model: str, data: str, out: str, *, preset: str, overrides: Sequence[str] = (),
                 seed: int = 0) -> dict:
    module = protocol_module(name)
    if preset not in module.PRESETS:
        raise ConfigError(f"the {name} protocol has no preset {preset!r}",
                          f"choose one of: {', '.join(sorted(module.PRESETS))}")
    return module.run(model, data, out, preset=preset, overrides=list(overrides), seed=seed)


def default_preset(data: str) -> str:
    """The preset a protocol runs without --preset: the published protocol on a real dataset, the embedded
    one on `--data embedded` (a toy preset on real data would report numbers nobody published)."""
    return "embedded" if data == "embedded" else "paper"


def summary(record: dict) -> str:
    parts = []
    for name, m in record["metrics"].items():
        text = f"{name} {m['mean']:.2f}"
        if m.get("n", 1) > 1:
            text += f" ± {m.get('ci95', m['std']):.2f}"
        parts.append(text)
    preset = f" ({record['preset']} preset)" if record.get("preset") else ""
    return f"{record['benchmark']}{preset}: " + ", ".join(parts) + f"  ({record.get('_path', '')})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hexa transfer", description="Transfer evaluation of a frozen or "
                                     "fine-tuned trunk; each run writes one result record.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    for name in PROTOCOLS:
        p = sub.add_parser(name, help=DESCRIPTIONS[name], description=DESCRIPTIONS[name], epilog=_examples([name]),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--model", required=True, help="registered name[.tag], zoo folder, .safetensors or checkpoint")
        p.add_argument("--data", required=True, help="`embedded` or a dataset path")
        p.add_argument("--out", required=True, help="results folder (records are added, never overwritten)")
        presets = ", ".join(PRESET_NAMES[name])
        p.add_argument("--preset", default=None, metavar="NAME",
                       help=f"named protocol constants, one of: {presets} (default: paper on a dataset path, "
                            "embedded on --data embedded)")
        p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                       help=f"override config values, e.g. --set {SET_EXAMPLES[name]} (repeatable)")
        p.add_argument("--seed", type=int, default=0)
        if name in DATASET_CHOICES:
            p.add_argument("--dataset", choices=DATASET_CHOICES[name], default=None,
                           help="which dataset --data holds (the same as --set dataset=NAME)")
        if name in RESUMABLE:
            p.add_argument("--resume", choices=("auto",), default=None,
                           help="checkpoint as it trains and continue a killed run with the same arguments")
        if name in HEAD_PROTOCOLS:
            p.add_argument("--head", default=None, help="the record of a `hexa transfer linear` run (or the "
                           "heads/*.safetensors it wrote); " + HEAD_DEFAULT[name])
    s = sub.add_parser("suite", help="run every protocol with its embedded or paper preset", epilog=_examples(["suite"]),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--model", required=True)
    s.add_argument("--suite", choices=("embedded", "paper"), default="embedded")
    s.add_argument("--out", required=True)
    s.add_argument("--data", default=None, help="dataset for every protocol (default: embedded for the embedded "
                   "suite; the paper suite needs --data or --data-for)")
    s.add_argument("--data-for", action="append", default=[], metavar="PROTOCOL=PATH",
                   help="dataset of one protocol (repeatable)")
    s.add_argument("--only", default=None, help="comma-separated protocols to run (default: all); an extra preset "
                   "of a protocol is named PROTOCOL:PRESET, e.g. fewshot:cdfsl_embedded")
    s.add_argument("--skip", default="", help="comma-separated protocols to leave out")
    s.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="PROTOCOL.KEY=VALUE",
                   help="override protocol config values, e.g. --set knn.max_per_class=50 (repeatable)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--executor", choices=EXECUTORS, default="inline",
                   help="inline: one protocol after another here; local: a process each; slurm: a SLURM job each")
    s.add_argument("--status", action="store_true", help="list each protocol's job: queued, running, done, failed")
    add_cluster_arguments(s)
    return parser


# Each suite: (protocol, preset) in order; a protocol may run under more than one preset. The embedded suite's
# linear metric is the converged L-BFGS probe (`linear:embedded` runs main_lincls's SGD at 10 epochs by name).
# semisup and detection are left out of it (still runnable by name, `--only semisup,detection`): at the CPU
# sizes the demo affords, every trunk scored chance on them (README, section 3).
SUITES: dict[str, list[tuple[str, str]]] = {
    "embedded": [("linear", "embedded_fast"), ("knn", "embedded"), ("lowshot-svm", "embedded"),
                 ("fewshot", "embedded"), ("manyshot", "embedded"), ("fewshot", "cdfsl_embedded"),
                 ("adversarial", "embedded"), ("robustness", "embedded")],
    "paper": [(name, "paper") for name in ("linear", "knn", "lowshot-svm", "semisup", "fewshot", "detection")],
}


def _split_names(text: str | None) -> list[str]:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    unknown = [n for n in names if n.split(":")[0] not in PROTOCOLS]
    if unknown:
        raise ConfigError(f"unknown protocol(s) {unknown}", f"choose from: {', '.join(PROTOCOLS)}")
    return names


def suite_entries(suite: str, only: Sequence[str] = (), skip: Sequence[str] = ()) -> list[tuple[str, str, str]]:
    """(label, protocol, preset) to run: the suite's entries (a protocol's first one labelled by its bare name,
    the others PROTOCOL:PRESET), or those named in `only`, where PROTOCOL:PRESET may name any preset."""
    entries, seen = [], set()
    for name, preset in SUITES[suite]:
        entries.append((name if name not in seen else f"{name}:{preset}", name, preset))
        seen.add(name)
    if only:
        known = {label: (label, n, p) for label, n, p in entries} | {f"{n}:{p}": (f"{n}:{p}", n, p) for _, n, p in entries}
        extra = {item: (item, *item.split(":", 1)) for item in only if ":" in item and item not in known}
        bare = {item: (item, item, "embedded" if suite == "embedded" else "paper") for item in only
                if ":" not in item and item not in known}
        entries = [known.get(item) or extra.get(item) or bare[item] for item in only]
    return [e for e in entries if e[0] not in set(skip)]


def route(overrides: Sequence[str], data_for: Sequence[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """`PROTOCOL.key=value` overrides and `PROTOCOL=PATH` datasets, per protocol."""
    routed: dict[str, list[str]] = {}
    for item in overrides:
        name, dot, rest = item.partition(".")
        if not dot or name not in PROTOCOLS or "=" not in rest:
            raise ConfigError(f"suite override {item!r} is not PROTOCOL.KEY=VALUE",
                              f"e.g. --set knn.max_per_class=50; PROTOCOL is one of {', '.join(PROTOCOLS)}")
        routed.setdefault(name, []).append(rest)
    per_protocol = {}
    for item in data_for:
        name, sep, path = item.partition("=")
        if not sep or name not in PROTOCOLS:
            raise ConfigError(f"--data-for {item!r} is not PROTOCOL=PATH", f"PROTOCOL is one of {', '.join(PROTOCOLS)}")
        per_protocol[name] = path
    return routed, per_protocol


def run_suite(model: str, suite: str, out: str, *, data: str | None = None, data_for: Sequence[str] = (),
              only: Sequence[str] = (), skip: Sequence[str] = (), overrides: Sequence[str] = (),
              seed: int = 0) -> tuple[list[dict], dict[str, str]]:
    """Every entry of SUITES[suite] (or of the protocols `only`, minus `skip`); returns (records, failures).

    `overrides` are `PROTOCOL.key=value`, each passed to its protocol as `key=value`. A protocol that
    fails with a user-fixable error is reported and the suite goes on with the next.
    """
    routed, per_protocol = route(overrides, data_for)
    default = data if data is not None else ("embedded" if suite == "embedded" else None)
    records, failures = [], {}
    for label_, name, preset in suite_entries(suite, only, skip):
        dataset = per_protocol.get(name, default)
        if dataset is None:
            failures[label_] = f"no dataset: pass --data-for {name}=PATH (the paper suite has no default data)"
            continue
        start = time.perf_counter()
        log.info("== %s (%s preset) on %s", name, preset, dataset)
        try:
            record = run_protocol(name, model, dataset, out, preset=preset, overrides=routed.get(name, ()), seed=seed)
            if record is None:  # handed off (detectron2 not installed) or a non-zero torchrun rank: nothing ran here
                continue
            records.append(record)
            log.info("%s  [%.0f s]", summary(record), time.perf_counter() - start)
        except HexaError as err:
            failures[label_] = err.message + (f" (fix: {err.fix})" if err.fix else "")
            log.error("%s failed: %s", label_, failures[label_])
    return records, failures


def _suite_jobs(args) -> int:
    """The suite as one job per protocol (transfer/suite_jobs.py), or their status."""
    from .suite_jobs import protocol_jobs, status_lines, submit_suite

    routed, per_protocol = route(args.overrides, args.data_for)
    default = args.data if args.data is not None else ("embedded" if args.suite == "embedded" else None)
    entries = suite_entries(args.suite, _split_names(args.only), _split_names(args.skip))
    jobs, missing = protocol_jobs(args.model, args.out, entries, routed, per_protocol, default, args.seed, RESUMABLE)
    if not args.status:
        submit_suite(jobs, args.executor, resources(args), args.parallel)
    print("\n".join(status_lines(jobs)))
    for name, why in missing.items():
        print(f"{name}: FAILED: {why}", file=sys.stderr)
    return 1 if missing else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.protocol == "suite" and (args.executor != "inline" or args.status):
        return _suite_jobs(args)
    if args.protocol == "suite":
        records, failures = run_suite(args.model, args.suite, args.out, data=args.data, data_for=args.data_for,
                                      only=_split_names(args.only), skip=_split_names(args.skip),
                                      overrides=args.overrides, seed=args.seed)
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
    record = run_protocol(args.protocol, args.model, args.data, args.out, preset=preset,
                          overrides=overrides, seed=args.seed)
    if record is not None:  # None: handed off to detectron2 elsewhere, or a non-zero torchrun rank
        print(summary(record))
    return 0
