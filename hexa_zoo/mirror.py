"""`hexa zoo mirror`: the releases in the local zoo as Hugging Face Hub repository folders, pushed on request.

For every release (`hexa_zoo.releases`) whose folder the local zoo holds (`hexa zoo fetch NAME`), `<out>/<name>/`
gets the folder's `model.safetensors` and `config.json` as they are (plain timm reads them:
`timm.create_model('hf-hub:ORG/NAME', pretrained=True)`, or `local-dir:` before pushing) and its model card,
whose license is the release's and whose `model-index` holds the published numbers of that release, each with
its protocol variant as the metric's config. A release whose license forbids redistribution is left out, with
the reason. Nothing is pushed without `push=True`; offline that fails at once.

The published numbers are data passed in, not code imported: `published_rows` reads a CSV in the columns of the
leaderboard's `published.csv` (method, arch, epochs, benchmark, metric, value, source, protocol, ...), so the
ground floor never imports `leaderboards/` and the mirror's cards carry the same numbers the page shows. Without
that file a card's model-index holds the release's own published ImageNet top-1.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .cards import CARD_FILE, write_model_index
from .errors import DataError, OfflineError
from .publish import push_folder
from .releases import ARCH, RELEASES, Release, release_for
from .weights import CONFIG_FILE, WEIGHTS_FILE, is_offline, zoo_home

PUBLISHED_COLUMNS = ("method", "arch", "epochs", "benchmark", "metric", "value", "source", "protocol")
TASKS = {"det": "object-detection"}  # benchmarks whose name holds "det"; every other one classifies images


@dataclass
class Mirrored:
    release: Release
    folder: Path | None    # the Hub folder written, None when left out
    repo_id: str
    skipped: str | None = None  # why it was left out


def published_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a published-numbers CSV (the leaderboard's `published.csv` columns)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise DataError(f"cannot read the published numbers {path}: {err}",
                        "pass the leaderboard's table: --published leaderboards/published.csv") from None
    missing = [c for c in PUBLISHED_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise DataError(f"{path} lacks the columns {', '.join(missing)}",
                        f"pass a CSV with the columns {', '.join(PUBLISHED_COLUMNS)} (leaderboards/published.csv)")
    return rows


def rows_of(release: Release, rows: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """The published rows that are this release's: its method (however spelt) and architecture, and its epochs (a
    row without epochs belongs to the release ssl-transfer evaluated, the one `release_for(method)` returns)."""
    return [r for r in rows if r["arch"] in ("", ARCH) and release_for(r["method"], r["epochs"]) == release]


def eval_results(release: Release, rows: Sequence[dict[str, str]]) -> list:
    """Hub `EvalResult`s for a release: one per published row, its protocol variant as the metric's config;
    the release's own published top-1 when no row is given."""
    from huggingface_hub import EvalResult

    if not rows:
        rows = [{"benchmark": "imagenet_linear", "metric": "top1", "value": str(release.top1),
                 "source": release.top1_source, "protocol": "reported"}]
    results = []
    for r in rows:
        variant = r.get("protocol") or "reported"
        results.append(EvalResult(
            task_type=next((t for k, t in TASKS.items() if k in r["benchmark"]), "image-classification"),
            # The Hub groups a card's results by task and dataset type: the benchmark is what tells them apart.
            task_name=r["benchmark"], dataset_type=r["benchmark"], dataset_name=r["benchmark"],
            metric_type=r["metric"], metric_name=f"{r['metric']} ({variant})", metric_value=float(r["value"]),
            metric_config=variant, metric_args={"source": r.get("source") or "not stated"}))
    return results


def mirror(org: str, out: Path, *, published: Sequence[dict[str, str]] = (), push: bool = False,
           zoo: Path | None = None) -> list[Mirrored]:
    """Write `<out>/<model>.<tag>/` for every release the local zoo holds; push each to `<org>/<model>.<tag>`
    when `push`. Returns what was written (or left out, and why) per release."""
    if push and is_offline():
        raise OfflineError(f"cannot push to the Hub organisation {org}: offline (HF_HUB_OFFLINE/HEXA_ZOO_OFFLINE is set)",
                           f"run without --push to write the folders under {out}, then push them when online")
    root = Path(zoo or zoo_home())
    done = []
    for release in RELEASES.values():
        source = root / release.name
        if not (source / WEIGHTS_FILE).is_file():
            continue
        repo_id = f"{org}/{release.name}"
        if release.redistribution:
            done.append(Mirrored(release, None, repo_id, f"its license ({release.license}) forbids redistribution: "
                                                         f"{release.redistribution}"))
            continue
        folder = Path(out) / release.name
        folder.mkdir(parents=True, exist_ok=True)
        for name in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE):
            shutil.copyfile(source / name, folder / name)
        _set_license(folder / CARD_FILE, release)
        write_model_index(folder, eval_results(release, rows_of(release, published)))
        if push:
            push_folder(folder, repo_id)
        done.append(Mirrored(release, folder, repo_id))
    return done


def _set_license(card_path: Path, release: Release) -> None:
    """The card's license is the release's (a folder published by hand may say otherwise)."""
    from huggingface_hub import ModelCard

    from .fileio import atomic_write_text

    card = ModelCard.load(card_path)
    if card.data.license != release.license:
        card.data.license = release.license
        atomic_write_text(card_path, str(card))

