"""Our result records: collect and validate them, then group and aggregate them into table entries.

Rows are grouped by model (name and weights), benchmark, preset and config, and data fingerprint, then
aggregated over seeds: mean ± sample std with n seeds. With a single seed the row keeps the run's own
spread over its samples or episodes, and says so. Records measured on the embedded dataset, or with a
preset that reproduces no published protocol (`variants.OUR_PRESETS`), get tables of their own
(`table_of`), never a published one. A record's numbers then go where `placement.place` puts them, so a
model's many-shot records on eleven datasets make one row of the many-shot table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Sequence

from hexa_zoo.cards import find_card
from hexa_zoo.errors import DataError
from hexa_zoo.publish import recipe_of, zoo_folder_of
from hexa_zoo.records import SkippedFile, read_records

from .placement import DATASET_KEYS, place
from .variants import our_variant

log = logging.getLogger(__name__)

# Config keys that say where or how fast a run went, not what it measured: ignored when grouping.
IGNORED_CONFIG_KEYS = frozenset({"seed", "out", "out_dir", "output_dir", "cache", "cache_dir", "feature_cache",
                                 "num_workers", "workers", "device", "progress", "threads", "resume"})


def collect_records(result_dirs: Sequence[Path]) -> tuple[list[dict], list[SkippedFile]]:
    """Every valid record under `result_dirs`, and the files skipped (corrupt, foreign, no finite metrics)."""
    for d in result_dirs:
        if not d.is_dir():
            raise DataError(f"results folder {d} does not exist",
                            "pass the --out folder of `hexa transfer` runs to --results")
    records, skipped = read_records(result_dirs)
    good = []
    for rec in records:
        if (why := _valid_metrics(rec)) is None:
            good.append(rec)
        else:
            skipped.append(SkippedFile(Path(rec["_path"]), why))
    skipped.sort(key=lambda s: str(s.path))
    for s in skipped:
        log.warning("warning: skipped %s: %s", s.path, s.reason)
    return good, skipped


def config_id(config: dict, ignore: frozenset = frozenset()) -> str:
    """A short hash of a protocol config without the keys that do not change what was measured (and `ignore`)."""
    skip = IGNORED_CONFIG_KEYS | ignore

    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in skip}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node
    return hashlib.sha256(json.dumps(strip(config), sort_keys=True, default=str).encode()).hexdigest()[:8]


def table_of(record: dict) -> str:
    """The base table of a record (before `place` folds it); embedded or own-preset runs never join a published one."""
    benchmark = str(record["benchmark"])
    dataset = str(record["dataset"].get("name", ""))
    if dataset == "embedded" and not benchmark.startswith("embedded"):
        return f"embedded_{benchmark}"
    if not benchmark.startswith("embedded") and variant_of(record) is None:
        return f"{benchmark}_{record.get('preset')}_preset"
    return benchmark


def variant_of(record: dict) -> str | None:
    """The published protocol variant a record's (protocol, preset) reproduces (None: a preset of our own)."""
    return our_variant(str(record.get("protocol", "")), record.get("preset"))


def _valid_metrics(record: dict) -> str | None:
    """None when every metric has a finite numeric mean, else why not."""
    metrics = record.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        return "record has no metrics"
    for name, m in metrics.items():
        if not isinstance(m, dict) or not isinstance(m.get("mean"), (int, float)) or not math.isfinite(m["mean"]):
            return f"metric {name!r} has no finite mean"
    if not isinstance(record.get("dataset"), dict) or not isinstance(record.get("model"), dict):
        return "dataset and model must be objects"
    return None


def our_entries(records: Sequence[dict], out: Path, zoo: Path | None = None) -> list[dict]:
    """Long-format entries for our records: grouped, deduplicated per seed, aggregated over seeds; each links the
    card of its weights found in `zoo` (default: the local zoo)."""
    import numpy as np

    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        key = (table_of(rec), str(rec["model"].get("name", "?")), str(rec["model"].get("weights_sha256") or ""),
               str(rec.get("preset") or ""), config_id(rec.get("config") or {}),
               str(rec["dataset"].get("fingerprint") or ""), str(rec["dataset"].get("name", "")))
        groups.setdefault(key, []).append(rec)

    entries = []
    for (table, model, weights, preset, cfg_id, fingerprint, dataset), recs in sorted(groups.items()):
        # A seed run twice (a rerun with --force) counts once: its newest record stands.
        by_seed: dict = {}
        for rec in sorted(recs, key=lambda r: (str(r.get("created", "")), r["_path"])):
            by_seed[json.dumps(rec["seed"], sort_keys=True)] = rec
        runs = [by_seed[s] for s in sorted(by_seed)]
        # The card of exactly these weights (by sha256), wherever in the zoo it is; None when it is gone.
        card = find_card(weights, hints=[zoo_folder_of(runs[0]["model"])], zoo=zoo)
        recipe = recipe_of(card)
        links = ";".join(relative_link(Path(r["_path"]), out) for r in runs)
        variant = variant_of(runs[0])
        row_id = "|".join((model, weights, preset, cfg_id, fingerprint))
        # Folded into a table across datasets: one row per model and config, whatever dataset each record ran.
        folded_id = "|".join((model, weights, preset, config_id(runs[0].get("config") or {}, DATASET_KEYS)))
        base = {
            "kind": "ours", "order": 0, "model": model,
            "arch": str(runs[0]["model"].get("arch") or recipe.get("arch", "")),
            "epochs": str(recipe.get("epochs", "")), "protocol": variant or f"{preset} preset",
            "data": f"{dataset} ({fingerprint.split(':')[-1][:8]})" if fingerprint else dataset, "preset": preset,
            "source": "this repo", "verified": "yes", "value_text": "",
            "note": " ".join(sorted({n for r in runs for n in r.get("notes", []) if isinstance(n, str)})),
            "records": links, "card": relative_link(card / recipe["file"], out) if card else "",
            "config_id": cfg_id, "weights": weights[:12],
        }
        metric_names = sorted({m for r in runs for m in r["metrics"]})
        for name in metric_names:
            per_seed = [r["metrics"][name] for r in runs if name in r["metrics"]]
            if len(runs) > 1:  # over seeds (a metric missing from some seeds counts the seeds that have it)
                means = np.array([m["mean"] for m in per_seed], dtype=float)
                std = float(means.std(ddof=1)) if len(means) > 1 else math.nan
                stats = {"mean": float(means.mean()), "std": std, "n": len(means), "n_over": "seeds", "ci95": math.nan}
            else:  # one seed: the run's own spread over its samples or episodes
                m = per_seed[0]
                ci95 = m.get("ci95")  # few-shot reports a 95% confidence interval over its episodes
                stats = {"mean": float(m["mean"]), "std": float(m.get("std") or 0.0), "n": int(m.get("n") or 1),
                         "n_over": "samples", "ci95": float(ci95) if isinstance(ci95, (int, float)) else math.nan}
            for place_table, column in place(table, name, variant):
                folded = place_table != table
                entries.append({**base, **stats, "table": place_table, "metric": column,
                                "row_id": folded_id if folded else row_id,
                                **({"config_id": folded_id.rsplit("|", 1)[1]} if folded else {})})
    return _merge_folded(entries)


def _merge_folded(entries: list[dict]) -> list[dict]:
    """Rows folded across datasets: one data, note and record list for the row, made of all its records.

    Two records of one model that land in the same cell (the same dataset in two versions) cannot share a
    row: the later one keeps a row of its own, keyed by its data fingerprint.
    """
    seen: dict[tuple, str] = {}
    for e in entries:
        cell = (e["table"], e["row_id"], e["metric"])
        if cell in seen and seen[cell] != e["data"]:
            e["row_id"] += "|" + e["data"]
            cell = (e["table"], e["row_id"], e["metric"])
        seen[cell] = e["data"]
    rows: dict[tuple, list[dict]] = {}
    for e in entries:
        rows.setdefault((e["table"], e["row_id"]), []).append(e)
    for group in rows.values():
        if len({e["data"] for e in group}) > 1:
            data = "; ".join(sorted({e["data"] for e in group}))
            records = ";".join(dict.fromkeys(p for e in group for p in e["records"].split(";") if p))
            note = " ".join(sorted({n for e in group for n in [e["note"]] if n}))
            for e in group:
                e.update(data=data, records=records, note=note)
    return entries


def relative_link(path: Path, start: Path) -> str:
    """A relative, forward-slashed link, so the README works wherever the folder is moved with its records."""
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()

