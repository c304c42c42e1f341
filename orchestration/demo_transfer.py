"""The demo's transfer step: the embedded suite on each trunk (and on the untrained one), at the sizes the
budget affords, reusing every protocol already recorded for exactly these weights and sizes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from hexa_zoo.records import read_records

FULL_SUITE_BUDGET = 3.0        # from here the embedded transfer presets run unchanged (`hexa transfer suite`)


def trunk_identity(spec: str) -> tuple[str, str]:
    """(name, weights hash) that a transfer record of this model carries (what `load_trunk` reports)."""
    from hexa_zoo import load_trunk

    info = load_trunk(spec)[1]
    return info["name"], info["weights_sha256"]


def untrained_trunk(arch: str, seed: int, out: Path) -> Path:
    """`arch` as timm initialises it under `seed`, saved once: the reference pre-training has to beat."""
    path = out / "untrained" / f"{arch}_untrained_seed{seed}.safetensors"
    if not path.is_file():
        import timm
        from hexa_zoo.fileio import atomic_save_safetensors
        from hexa_zoo.seeding import seed_everything

        seed_everything(seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_safetensors(timm.create_model(arch, num_classes=0).state_dict(), path)
    return path


def done_protocols(results: Path, name: str, sha: str, budget: float) -> set[str]:
    """Protocols (CLI names) with a record for exactly these weights and this budget's protocol sizes."""
    if not results.is_dir():
        return set()
    records, _ = read_records([results])
    expected = expected_sizes(budget)
    done = set()
    for r in records:
        protocol = str(r["protocol"]).replace("_", "-")
        config = r.get("config") or {}
        if (r["model"].get("weights_sha256") == sha and r["model"].get("name") == name
                and all(config.get(k) == v for k, v in expected.get(protocol, {}).items())):
            done.add(protocol)
    return done


def expected_sizes(budget: float) -> dict[str, dict]:
    """Per protocol, every setting the demo may shrink, with the value this budget gives it."""
    from hexa_zoo.config import to_dict
    from transfer.protocols import PROTOCOLS
    from transfer.suite import suite_entries

    chosen = transfer_sizes(budget)
    presets = {name: preset for _, name, preset in reversed(suite_entries("embedded"))}  # a protocol's first entry
    sizes: dict[str, dict] = {}
    for protocol, shrinkable in transfer_sizes(0.0).items():  # the smallest budget shrinks every shrinkable setting
        preset = to_dict(PROTOCOLS[protocol].module.PRESETS[presets.get(protocol, "embedded")])
        sizes[protocol] = {name: chosen.get(protocol, {}).get(name, preset[name]) for name in shrinkable}
    return sizes


def transfer_sizes(budget: float) -> dict[str, dict]:
    """Per protocol (CLI name), its embedded preset's settings shrunk below FULL_SUITE_BUDGET (each protocol's
    own `embedded_sizes`, at budget / FULL_SUITE_BUDGET of the full suite), as values.

    The shrunk settings are recorded in each record's config, so they form their own leaderboard rows and
    are never averaged with full-preset runs. From FULL_SUITE_BUDGET on, the presets run unchanged.
    """
    from transfer.suite import embedded_sizes

    return {} if budget >= FULL_SUITE_BUDGET else embedded_sizes(budget / FULL_SUITE_BUDGET)


# The demo's transfer suite: the HEXA paper's protocols (the embedded suite has more: manyshot, cdfsl, ...), less
# semisup and detection: at the sizes the demo affords on a CPU (7 fine-tuning steps, 13 detector iterations)
# every trunk, untrained included, scored chance on them. `--protocols semisup detection` still runs them.
DEMO_PROTOCOLS = ("linear", "knn", "lowshot-svm", "fewshot")


def run_transfer(model: str, identity: tuple[str, str], seed: int, results: Path, budget: float, *,
                 force: bool = False, protocols: Sequence[str] | None = None) -> list[str]:
    """`hexa transfer suite --suite embedded` on one model (any `--model` spec, whose records carry
    `identity`: `trunk_identity(model)`), leaving out protocols already recorded for exactly its weights.

    Returns the protocols that failed (reported by the suite, not fatal: the leaderboard shows the rest).
    """
    from transfer.suite import run_suite, summary

    name, sha = identity
    wanted = list(protocols or DEMO_PROTOCOLS)
    done = set() if force else done_protocols(results, name, sha, budget) & set(wanted)
    todo = [p for p in wanted if p not in done]
    for protocol in sorted(done):
        print(f"       {protocol}: reusing the record for these weights")
    if not todo:
        return []
    overrides = [f"{protocol}.{key}={json.dumps(value)}"  # JSON values read back as the same YAML values
                 for protocol, sizes in transfer_sizes(budget).items() if protocol in todo
                 for key, value in sizes.items()]
    records, failures = run_suite(model, "embedded", str(results), only=todo, overrides=overrides, seed=seed)
    for record in records:
        print(summary(record))
    for protocol, why in failures.items():
        print(f"{protocol}: FAILED: {why}", file=sys.stderr)
    if not failures:
        return []
    return sorted(set(todo) - done_protocols(results, name, sha, budget))
