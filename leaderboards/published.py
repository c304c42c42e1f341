"""Published numbers: `published.csv` (beside this file, shipped with the package) and how they enter a table.

Every published number carries its source and whether we verified it. `refresh_published` rebuilds the
file from the project's shared reference list; `find_published` picks the file a compile reads.
"""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from hexa_zoo.errors import DataError
from hexa_zoo.fileio import atomic_write_text

PUBLISHED_CSV = Path(__file__).with_name("published.csv")  # the one copy: package data of `leaderboards`
# The shared reference list sits in ../shared beside a clone; relative to where the command runs.
DEFAULT_REFERENCES = Path("..") / "shared" / "reference_results.csv"
PUBLISHED_COLUMNS = ("method", "arch", "epochs", "benchmark", "metric", "value", "source", "note")
DATASET_NAMES = {"imagenet": "ImageNet-1k", "voc07": "PASCAL VOC2007", "voc0712": "PASCAL VOC07+12",
                 "coco": "COCO 2017", "embedded": "the embedded dataset"}


def refresh_published(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Rebuild `published.csv` from the shared reference list, adding a `verified` column.

    A row whose note says "not verified" gets `verified=no`; every other row was taken from the
    source it names (`verified=yes`). Rows keep their order, so the file diffs cleanly.
    """
    rows = _read_csv(Path(src), required=PUBLISHED_COLUMNS)
    lines = [list(PUBLISHED_COLUMNS) + ["verified"]]
    for row in rows:
        verified = "no" if "not verified" in row["note"].lower() else "yes"
        lines.append([row[c] for c in PUBLISHED_COLUMNS] + [verified])
    return atomic_write_text(dst, _csv_text(lines))


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"published references {path} do not exist",
                        "pass the path of reference_results.csv (it sits in ../shared beside a clone)")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    header = set(rows[0]) if rows else set()
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path} lacks the column(s) {missing}", f"its header must name {list(required)}")
    for i, row in enumerate(rows, start=2):
        try:
            float(row["value"])
        except (TypeError, ValueError):
            raise DataError(f"{path}, line {i}: value {row['value']!r} is not a number") from None
    return rows


def _csv_text(lines: Iterable[Sequence[str]]) -> str:
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    return buf.getvalue()


def normalise_benchmark(benchmark: str, metric: str) -> tuple[str, str]:
    """Published low-shot rows name one benchmark per k; records name one table with a metric per k."""
    if m := re.fullmatch(r"(.+_lowshot_svm)_k(\d+)", benchmark):
        return m[1], f"{metric}@k{m[2]}"
    if m := re.fullmatch(r"(.+)_svm_full", benchmark):
        return f"{m[1]}_lowshot_svm", f"{metric}@full"
    return benchmark, metric


def published_entries(path: Path) -> list[dict]:
    """One long-format entry per published number."""
    entries = []
    for order, row in enumerate(_read_csv(path, required=PUBLISHED_COLUMNS)):
        table, metric = normalise_benchmark(row["benchmark"], row["metric"])
        unverified = row.get("verified", "").strip().lower() == "no" or "not verified" in row["note"].lower()
        entries.append({
            "table": table, "metric": metric, "kind": "published", "order": order,
            "row_id": "|".join((row["method"], row["arch"], row["epochs"], row["source"], row["note"])),
            "model": row["method"], "arch": row["arch"], "epochs": row["epochs"],
            "data": DATASET_NAMES.get(table.split("_")[0], table.split("_")[0]), "preset": "paper",
            "source": row["source"], "verified": "no" if unverified else "yes", "note": row["note"],
            "mean": float(row["value"]), "value_text": row["value"], "std": math.nan, "n": math.nan, "ci95": math.nan,
            "n_over": "", "records": "", "recipe": "", "config_id": "", "weights": "",
        })
    return entries


def find_published(out: Path, published: str | os.PathLike | None) -> Path | None:
    """`--published`, else `<out>/published.csv`, else the package's own published.csv."""
    if published is not None:
        path = Path(published)
        if not path.is_file():
            raise DataError(f"published references {path} do not exist",
                            "pass --published PATH, or rebuild it with "
                            "--refresh-published ../shared/reference_results.csv")
        return path
    for path in (out / "published.csv", PUBLISHED_CSV):
        if path.is_file():
            return path
    return None
