"""Published numbers: `published.csv` (beside this file, shipped with the package) and how they enter a table.

Every published number carries its source, the protocol variant that measured it (leaderboards/variants.py)
and whether we verified it. `refresh_published` rebuilds the file from the project's shared reference list
and the in-repo transcriptions in `sources/*.csv` (numbers the shared list lacks, e.g. ssl-transfer's,
each row naming its variant itself); `find_published` picks the file a compile reads.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

from hexa_zoo.errors import DataError
from hexa_zoo.fileio import atomic_write_text

from .placement import combined_data, place
from .variants import VARIANTS, reference_protocol

PUBLISHED_CSV = Path(__file__).with_name("published.csv")  # the one copy: package data of `leaderboards`
# The shared reference list sits in ../shared beside a clone; relative to where the command runs.
DEFAULT_REFERENCES = Path("..") / "shared" / "reference_results.csv"
# In-repo transcriptions merged after the shared list, in file-name order: the PUBLISHED_COLUMNS plus
# `protocol` (a name in VARIANTS) and optionally `ci95` (the source's ± when it is a 95% interval).
SOURCES = Path(__file__).with_name("sources")
PUBLISHED_COLUMNS = ("method", "arch", "epochs", "benchmark", "metric", "value", "source", "note")
OUTPUT_COLUMNS = PUBLISHED_COLUMNS + ("ci95", "protocol", "verified")
DATASET_NAMES = {"imagenet": "ImageNet-1k", "voc07": "PASCAL VOC2007", "voc0712": "PASCAL VOC07+12",
                 "coco": "COCO 2017", "embedded": "the embedded dataset"}


def refresh_published(src: str | os.PathLike, dst: str | os.PathLike,
                      sources: Sequence[str | os.PathLike] | None = None) -> Path:
    """Rebuild `published.csv` from the shared reference list and the in-repo `sources` (default: sources/*.csv).

    Adds a `protocol` column (the shared list's rows get theirs from `variants.REFERENCE_PROTOCOLS`; a
    source file names its own) and a `verified` column: a row whose note says "not verified" gets
    `verified=no`; every other row was taken from the source it names. Rows keep their order (the
    shared list first), so the file diffs cleanly.
    """
    sources = sorted(SOURCES.glob("*.csv")) if sources is None else [Path(p) for p in sources]
    lines = [list(OUTPUT_COLUMNS)]
    for path in [Path(src), *sources]:
        for i, row in enumerate(_read_csv(path, required=PUBLISHED_COLUMNS), start=2):
            protocol = protocol_of(row, where=f"{path}, line {i}")
            verified = "no" if "not verified" in row["note"].lower() else "yes"
            lines.append([row[c] for c in PUBLISHED_COLUMNS] + [row.get("ci95") or "", protocol, verified])
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
        for column in ("value", "ci95"):
            try:
                if column == "value" or row.get(column):
                    float(row[column])
            except (TypeError, ValueError):
                raise DataError(f"{path}, line {i}: {column} {row[column]!r} is not a number") from None
    return rows


def _csv_text(lines: Iterable[Sequence[str]]) -> str:
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    return buf.getvalue()


def protocol_of(row: dict[str, str], where: str = "a published row") -> str:
    """A row's protocol variant: its own `protocol` column, else the one its source is known to run."""
    protocol = row.get("protocol") or reference_protocol(row["source"], row["benchmark"])
    if protocol not in VARIANTS:
        raise DataError(f"{where}: no known protocol variant for source {row['source']!r}, benchmark "
                        f"{row['benchmark']!r}" + (f" (got {protocol!r})" if protocol else ""),
                        "name it in leaderboards/variants.py (VARIANTS, REFERENCE_PROTOCOLS), or give the file a "
                        "protocol column")
    return protocol


def places_of(row: dict[str, str]) -> list[tuple[str, str]]:
    """[(table, column)] of a published row: by its benchmark, metric and protocol variant."""
    return place(row["benchmark"], row["metric"], protocol_of(row))


def published_entries(path: Path) -> list[dict]:
    """One long-format entry per published number and place (ImageNet-C's mCE sits in two tables)."""
    entries = []
    for order, row in enumerate(_read_csv(path, required=PUBLISHED_COLUMNS)):
        unverified = row.get("verified", "").strip().lower() == "no" or "not verified" in row["note"].lower()
        ci95 = float(row["ci95"]) if row.get("ci95") else math.nan
        text = f"{row['value']} ± {row['ci95']}" if row.get("ci95") else row["value"]
        protocol = protocol_of(row, where=f"{path}, row {order + 2}")
        for table, metric in place(row["benchmark"], row["metric"], protocol):
            entries.append({
                "table": table, "metric": metric, "kind": "published", "order": order,
                "row_id": "|".join((row["method"], row["arch"], row["epochs"], row["source"], row["note"], protocol)),
                "model": row["method"], "arch": row["arch"], "epochs": row["epochs"], "protocol": protocol,
                "data": combined_data(table) or DATASET_NAMES.get(table.split("_")[0], table.split("_")[0]),
                "preset": "paper", "source": row["source"], "verified": "no" if unverified else "yes",
                "note": row["note"], "mean": float(row["value"]), "value_text": text, "std": math.nan, "n": math.nan,
                "ci95": ci95, "n_over": "", "records": "", "recipe": "", "config_id": "", "weights": "",
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
