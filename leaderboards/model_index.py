"""`hexa leaderboard --update-cards`: each zoo model's card carries the transfer results measured on its weights.

For every record, the card of the weights it measured (hexa_zoo.cards.find_card, by weights sha256) gets one
Hub `EvalResult` per metric: task, dataset (name and fingerprint), metric and value, the protocol variant (or
our preset) as the metric's config, and the record's file name, sha256 and seed as its args, so a number on the
Hub page leads back to the record that holds it. The card's model-index is rebuilt from the records each time
(same records, same card); records whose weights no card holds are listed, not guessed at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from hexa_zoo.cards import find_card, write_model_index
from hexa_zoo.fileio import sha256_file
from hexa_zoo.publish import zoo_folder_of

from .collect import variant_of

TASKS = {"detection": "object-detection"}  # every other protocol classifies images


def eval_results(records: Sequence[dict]) -> tuple[dict[Path, list], list[dict]]:
    """({card folder: [EvalResult, ...]}, records whose weights no card on this machine holds)."""
    from huggingface_hub import EvalResult

    by_card: dict[Path, list[tuple]] = {}
    orphans = []
    for rec in records:
        weights = str(rec["model"].get("weights_sha256") or "")
        folder = find_card(weights, hints=[zoo_folder_of(rec["model"])])
        if folder is None:
            orphans.append(rec)
            continue
        path = Path(rec["_path"])
        record_sha256 = sha256_file(path)  # once per record: every metric's result names it
        dataset = rec["dataset"]
        fingerprint = str(dataset.get("fingerprint") or "").split(":")[-1][:8]
        variant = variant_of(rec) or f"{rec.get('preset')} preset"
        for name, m in sorted(rec["metrics"].items()):
            result = EvalResult(
                task_type=TASKS.get(str(rec["protocol"]), "image-classification"),
                task_name=f"{rec['protocol']} ({rec['benchmark']})",
                dataset_type=str(dataset.get("name", "")),
                dataset_name=f"{dataset.get('name', '')} ({fingerprint})" if fingerprint else str(dataset.get("name")),
                metric_type=name, metric_name=f"{name} ({variant})", metric_value=round(float(m["mean"]), 4),
                metric_config=variant,
                metric_args={"record": path.name, "record_sha256": record_sha256, "seed": rec.get("seed"),
                             "n": int(m.get("n") or 1)})
            by_card.setdefault(folder, []).append((str(rec["benchmark"]), name, path.name, result))
    return {f: [r[-1] for r in sorted(rs, key=lambda r: r[:3])] for f, rs in by_card.items()}, orphans


def update_cards(records: Sequence[dict]) -> tuple[list[Path], list[dict]]:
    """Write the model-index of every card some record measured; returns (cards written, orphan records)."""
    results, orphans = eval_results(records)
    return [write_model_index(folder, rs) for folder, rs in sorted(results.items())], orphans
