"""The transfer protocols as a library: the suites, and running one protocol or a suite.

Which protocols exist, and each one's module, presets, readers and options, is the table
`transfer.protocols.PROTOCOLS`; each module has `run(model, data, out, preset=..., overrides=..., seed=...) ->
record`. `hexa transfer` (transfer/cli.py) parses its arguments into these calls; the demo and the study call
them directly.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

from hexa_zoo.errors import ConfigError, HexaError

from .protocols import PROTOCOLS, Protocol

log = logging.getLogger(__name__)

# Protocols that train long enough to checkpoint (what `--resume auto` and the suite's jobs resume).
RESUMABLE = tuple(name for name, protocol in PROTOCOLS.items() if protocol.resumes)

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


def protocol(name: str) -> Protocol:
    """The table's row of protocol `name`, or a ConfigError naming the protocols there are."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown transfer protocol {name!r}", f"choose one of: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def embedded_sizes(share: float) -> dict[str, dict]:
    """Per protocol that can shrink (its module's `embedded_sizes`), its embedded preset's settings at `share`
    (0-1) of their full size: what a caller short of time (the demo) passes as `--set` overrides."""
    sizes = {}
    for name, row in PROTOCOLS.items():
        shrink = getattr(row.module, "embedded_sizes", None)
        shrunk = shrink(share) if shrink is not None else {}
        if shrunk:
            sizes[name] = shrunk
    return sizes


def run_protocol(name: str, model: str, data: str, out: str, *, preset: str, overrides: Sequence[str] = (),
                 seed: int = 0) -> dict:
    row = protocol(name)
    if preset not in row.presets:
        raise ConfigError(f"the {name} protocol has no preset {preset!r}", f"choose one of: {', '.join(row.presets)}")
    return row.module.run(model, data, out, preset=preset, overrides=list(overrides), seed=seed)


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


def split_names(text: str | None) -> list[str]:
    """The protocols of a comma-separated list (`--only`, `--skip`); PROTOCOL:PRESET names a preset."""
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


def suite_runs(suite: str, data: str | None, per_protocol: dict[str, str], only: Sequence[str] = (),
               skip: Sequence[str] = ()) -> list[tuple[str, str, str, str | None]]:
    """(label, protocol, preset, dataset) of each entry to run, whether here or as jobs: a protocol's dataset
    from --data-for, else `data`, else the embedded data for the embedded suite; None where there is none
    (`no_dataset` says what to pass)."""
    default = data if data is not None else ("embedded" if suite == "embedded" else None)
    return [(label, name, preset, per_protocol.get(name, default))
            for label, name, preset in suite_entries(suite, only, skip)]


def no_dataset(name: str) -> str:
    return f"no dataset: pass --data-for {name}=PATH (the paper suite has no default data)"


def run_suite(model: str, suite: str, out: str, *, data: str | None = None, data_for: Sequence[str] = (),
              only: Sequence[str] = (), skip: Sequence[str] = (), overrides: Sequence[str] = (),
              seed: int = 0) -> tuple[list[dict], dict[str, str]]:
    """Every entry of SUITES[suite] (or of the protocols `only`, minus `skip`); returns (records, failures).

    `overrides` are `PROTOCOL.key=value`, each passed to its protocol as `key=value`. A protocol that
    fails with a user-fixable error is reported and the suite goes on with the next.
    """
    routed, per_protocol = route(overrides, data_for)
    records, failures = [], {}
    for label_, name, preset, dataset in suite_runs(suite, data, per_protocol, only, skip):
        if dataset is None:
            failures[label_] = no_dataset(name)
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
