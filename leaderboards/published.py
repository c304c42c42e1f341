"""Published numbers: `published.csv` (beside this file, shipped with the package) and how they enter a table.

Every published number carries its source, the protocol variant that measured it (leaderboards/variants.py)
and whether we verified it. `refresh_published` rebuilds the file from `sources/` (in the repository and the
package: each file's rows name where their numbers come from, see sources/README.md); `find_published` picks
the file a compile reads.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

from hexa_zoo.errors import DataError
from hexa_zoo.fileio import atomic_write_text

from . import remeasure, ssl_transfer
from .placement import combined_data, place
from .variants import VARIANTS, reference_protocol

PUBLISHED_CSV = Path(__file__).with_name("published.csv")  # the one copy: package data of `leaderboards`
# The sources published.csv is built from, merged in file-name order. Two shapes: published rows (the
# PUBLISHED_COLUMNS, optionally `ci95` and `protocol`, else the protocol comes from REFERENCE_PROTOCOLS by
# source), and a paper's tables as transcribed (ssl_transfer.TRANSCRIPTION_COLUMNS).
SOURCES = Path(__file__).with_name("sources")
PUBLISHED_COLUMNS = ("method", "arch", "epochs", "benchmark", "metric", "value", "source", "note")
OUTPUT_COLUMNS = PUBLISHED_COLUMNS + ("ci95", "protocol", "verified")
DATASET_NAMES = {"imagenet": "ImageNet-1k", "voc07": "PASCAL VOC2007", "voc0712": "PASCAL VOC07+12",
                 "coco": "COCO 2017", "embedded": "the embedded dataset"}
# Where a source can be read: links for the web page (the exact source text -> URL; a leading owner/repo is
# linked to its GitHub page by `source_url`).
SOURCE_URLS = {
    "SwAV paper (Caron et al. 2020) Table 2": "https://arxiv.org/abs/2006.09882",
    "EsViT paper (Li et al. 2021)": "https://arxiv.org/abs/2106.09785",
    "HEXA paper as indexed by a results aggregator": "https://arxiv.org/abs/2012.13493",
}


def source_files(sources: Sequence[str | os.PathLike] | None = None) -> list[Path]:
    """The CSVs a refresh reads: `sources` (files, or folders of *.csv), default the package's sources/."""
    paths = []
    for s in [SOURCES] if sources is None else [Path(p) for p in sources]:
        s = Path(s)
        if s.is_dir():
            paths += sorted(s.glob("*.csv"))
        elif s.is_file():
            paths.append(s)
        else:
            raise DataError(f"published sources {s} do not exist",
                            f"pass CSV files or a folder of them; the repository's are in {SOURCES}")
    if not paths:
        raise DataError(f"no *.csv among the published sources {[str(p) for p in sources or [SOURCES]]}",
                        f"pass CSV files or a folder of them; the repository's are in {SOURCES}")
    return paths


def refresh_published(dst: str | os.PathLike, sources: Sequence[str | os.PathLike] | None = None) -> Path:
    """Rebuild `published.csv` from `sources` (default: the package's sources/*.csv) into `dst`.

    Adds a `protocol` column (rows without one get theirs from `variants.REFERENCE_PROTOCOLS`) and a
    `verified` column: a row whose note says "not verified" gets `verified=no`; every other row was taken
    from the source it names. Rows keep their order (files by name), so the file diffs cleanly.
    """
    lines = [list(OUTPUT_COLUMNS)]
    transcribed: list[dict[str, str]] = []
    transcriptions: list[str] = []
    for path in source_files(sources):
        header = _header(path)
        if set(ssl_transfer.TRANSCRIPTION_COLUMNS) <= header:
            transcribed += _read_csv(path, required=ssl_transfer.TRANSCRIPTION_COLUMNS)
            transcriptions.append(str(path))
            continue
        for i, row in enumerate(_read_csv(path, required=PUBLISHED_COLUMNS), start=2):
            lines.append(_output_row(row, where=f"{path}, line {i}"))
    for row in ssl_transfer.published_rows(transcribed, " + ".join(transcriptions)):
        lines.append(_output_row(row, where=f"{row['source']}: {row['method']} {row['benchmark']}"))
    return atomic_write_text(dst, _csv_text(lines))


def _output_row(row: dict[str, str], where: str) -> list[str]:
    protocol = protocol_of(row, where=where)
    verified = "no" if "not verified" in row["note"].lower() else "yes"
    return [row[c] for c in PUBLISHED_COLUMNS] + [row.get("ci95") or "", protocol, verified]


def _header(path: Path) -> set[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return set(next(csv.reader(f), []))


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"published references {path} do not exist",
                        f"pass an existing file; the package's own is {PUBLISHED_CSV}, rebuilt from {SOURCES} "
                        "by `hexa leaderboard --refresh-published`")
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
    """One long-format entry per published number and place (ImageNet-C's mCE sits in two tables).

    A model's numbers from one paper share a row across its tables (ssl-transfer's Tables 2, 6 and 7 are one
    row of few-shot columns); rows that would put two numbers in one cell stay apart, told apart by their note.
    """
    entries = []
    for order, row in enumerate(_read_csv(path, required=PUBLISHED_COLUMNS)):
        unverified = row.get("verified", "").strip().lower() == "no" or "not verified" in row["note"].lower()
        ci95 = float(row["ci95"]) if row.get("ci95") else math.nan
        text = f"{row['value']} ± {row['ci95']}" if row.get("ci95") else row["value"]
        protocol = protocol_of(row, where=f"{path}, row {order + 2}")
        for table, metric in place(row["benchmark"], row["metric"], protocol):
            entries.append({
                "table": table, "metric": metric, "kind": "published", "order": order,
                "row_id": "|".join((row["method"], row["arch"], row["epochs"], _paper_of(row["source"]), protocol)),
                "model": row["method"], "arch": row["arch"], "epochs": row["epochs"], "protocol": protocol,
                "data": combined_data(table) or DATASET_NAMES.get(table.split("_")[0], table.split("_")[0]),
                "preset": "paper", "source": row["source"], "verified": "no" if unverified else "yes",
                "note": row["note"], "mean": float(row["value"]), "value_text": text, "std": math.nan, "n": math.nan,
                "ci95": ci95, "n_over": "", "records": "", "card": "", "config_id": "", "weights": "",
                "benchmark": row["benchmark"],
            })
    return remeasure.annotate(_merge_rows(entries))


def _paper_of(source: str) -> str:
    """A source without its table number: the rows of one paper's tables can share a row."""
    import re

    return re.sub(r", Tables? [\d, ]+$", "", source)


def _merge_rows(entries: list[dict]) -> list[dict]:
    """Group entries into rows (see published_entries); a row's source and note list all of its entries'."""
    import re

    cells: set[tuple] = set()
    for e in entries:
        if (e["table"], e["row_id"], e["metric"]) in cells:  # two numbers for one cell: rows told apart by note
            e["row_id"] += "|" + e["note"]
        if (e["table"], e["row_id"], e["metric"]) in cells:
            e["row_id"] += f"|{e['order']}"
        cells.add((e["table"], e["row_id"], e["metric"]))
    rows: dict[tuple, list[dict]] = {}
    for e in entries:
        rows.setdefault((e["table"], e["row_id"]), []).append(e)
    for group in rows.values():
        sources = list(dict.fromkeys(e["source"] for e in group))
        tables = [m[1] for s in sources if (m := re.fullmatch(r".*, Table (\d+)", s))]
        if len(sources) > 1 and len(tables) == len(sources):
            source = f"{_paper_of(sources[0])}, Tables {', '.join(tables)}"
        else:
            source = "; ".join(sources)
        note = "; ".join(dict.fromkeys(part for e in group for part in e["note"].split("; ") if part))
        for e in group:
            e.update(source=source, note=note)
    return entries


def find_published(out: Path, published: str | os.PathLike | None) -> Path | None:
    """`--published`, else `<out>/published.csv`, else the package's own published.csv."""
    if published is not None:
        path = Path(published)
        if not path.is_file():
            raise DataError(f"published references {path} do not exist",
                            "pass --published PATH of an existing file, or rebuild it from the repository's "
                            "leaderboards/sources/ with `hexa leaderboard --refresh-published`")
        return path
    for path in (out / "published.csv", PUBLISHED_CSV):
        if path.is_file():
            return path
    return None


def source_url(source: str) -> str:
    """A link for a published row's source: an arXiv id it names, a known paper, or the GitHub repository
    it starts with (`facebookresearch/moco README`); "" when there is none."""
    import re

    if m := re.search(r"arXiv (\d{4}\.\d{4,5})", source):
        return f"https://arxiv.org/abs/{m[1]}"
    if source in SOURCE_URLS:
        return SOURCE_URLS[source]
    if m := re.match(r"([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)(?:\s|$)", source):
        return f"https://github.com/{m[1]}"
    return ""
