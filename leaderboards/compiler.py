"""Compile result records and published numbers into `<out>/README.md`, `tables/*.csv`, `plots/*.png` and
`site/index.html`.

Inputs are files a person can hold: result records (hexa_zoo.records; any number of folders) and
`published.csv` (every published number with its source and whether we verified it):

    README.md             one table per benchmark, published rows beside ours
    tables/<table>.csv    the same tables, machine-readable
    plots/*.png           low-shot mAP against k, pre-training curves, HEXA against its baseline
    site/index.html       one self-contained web page of all of it (leaderboards.site)

The output depends only on the inputs: rows are sorted, there are no timestamps, links are relative,
and the PNGs carry no creation metadata, so recompiling the same records gives byte-identical files.
pandas and matplotlib are imported inside functions so that importing the compiler stays light.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from hexa_zoo.fileio import atomic_write_text
from hexa_zoo.records import SkippedFile

from .collect import collect_records, our_entries, relative_link
from .published import find_published, published_entries
from .render import (csv_frame, family_of, is_embedded, markdown_table, natural_key, protocol_line, remeasure_lines,
                     scale_line, table_file_name, wide_table)

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("board")  # the committed board, beside the code (README, Layout)


@dataclass
class Compiled:
    """What one compilation wrote and what it skipped."""
    out: Path
    tables: dict = field(default_factory=dict)          # table name -> wide DataFrame
    metrics: dict = field(default_factory=dict)         # table name -> metric names
    written: list[Path] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)  # the valid records compiled

    @property
    def n_records(self) -> int:
        return len(self.records)

    @property
    def readme(self) -> Path:
        return self.out / "README.md"

    @property
    def site(self) -> Path:
        return self.out / "site" / "index.html"


def compile_leaderboard(results: Sequence[str | os.PathLike], out: str | os.PathLike = DEFAULT_OUT, *,
                        published: str | os.PathLike | None = None, runs: Sequence[str | os.PathLike] = (),
                        plots: bool = True, zoo: str | os.PathLike | None = None) -> Compiled:
    """Read records and published numbers, write README.md, tables/*.csv, plots/*.png and site/index.html
    under `out`. Each of our rows links the card of its weights, looked for in the zoo `zoo` (default: the local
    zoo, HEXA_ZOO_HOME)."""
    import pandas as pd

    out = Path(out)
    result_dirs = [Path(d) for d in results]
    good, skipped = collect_records(result_dirs)

    published_path = find_published(out, published)
    entries = our_entries(good, out, zoo=None if zoo is None else Path(zoo))
    if published_path is not None:
        entries += published_entries(published_path)
    else:
        log.warning("warning: no published.csv found; compiling our rows only")
    long = pd.DataFrame(entries)

    result = Compiled(out=out, skipped=skipped, records=good)
    if len(long):
        for table in sorted(long["table"].unique(), key=lambda t: (is_embedded(t), family_of(t)[0], natural_key(t))):
            frame, metrics = wide_table(long[long["table"] == table])
            result.tables[table], result.metrics[table] = frame, metrics

    (out / "tables").mkdir(parents=True, exist_ok=True)
    for table, frame in result.tables.items():
        path = out / "tables" / f"{table_file_name(table)}.csv"
        atomic_write_text(path, csv_frame(frame, result.metrics[table]).to_csv(index=False, float_format="%.4f",
                                                                                 lineterminator="\n"))
        result.written.append(path)
    plots_made: dict = {}
    if plots:
        from . import figures

        run_dirs = figures.find_runs(runs, [r["model"] for r in good])
        plots_made = figures.write_plots(result.tables, result.metrics, run_dirs, out / "plots")
        result.written += [p.path for p in plots_made.values()]
    _remove_stale(out, result.written)
    plot_paths = {title: p.path for title, p in plots_made.items()}
    readme = render_readme(result, result_dirs, published_path, plot_paths)
    atomic_write_text(result.readme, readme)
    result.written.append(result.readme)
    from .site import render_site

    atomic_write_text(result.site, render_site(out, result.tables, result.metrics, result.skipped,
                                               sources_line(result, result_dirs, published_path), plots_made))
    result.written.append(result.site)
    return result


def _remove_stale(out: Path, written: Sequence[Path]) -> None:
    """Tables and plots of an earlier compile that this one did not write (only in our own subfolders)."""
    keep = {p.resolve() for p in written}
    for sub, pattern in (("tables", "*.csv"), ("plots", "*.png")):
        for path in (out / sub).glob(pattern):
            if path.resolve() not in keep:
                path.unlink()


def sources_line(result: Compiled, result_dirs: Sequence[Path], published_path: Path | None) -> str:
    """Where the compiled numbers came from (Markdown; the web page shows it too)."""
    dirs = ", ".join(f"`{relative_link(d, result.out)}`" for d in result_dirs) or "no folder"
    pub = f"`{relative_link(published_path, result.out)}`" if published_path else "no published.csv"
    return f"Sources: {result.n_records} result record(s) from {dirs}; published numbers from {pub}."


def render_readme(result: Compiled, result_dirs: Sequence[Path], published_path: Path | None,
                  plot_paths: dict[str, Path]) -> str:
    """The compiled README: paper-scale tables, then embedded ones, then plots and the skipped files."""
    out = result.out
    lines = [
        "# Leaderboards", "",
        "Compiled by `hexa leaderboard` — do not edit by hand; rerun it after adding result records. "
        "The same tables as a web page: [site/index.html](site/index.html).", "",
        sources_line(result, result_dirs, published_path), "",
        "Published rows are numbers as reported by the source named in each row (ResNet-50, ImageNet-1k "
        "pre-training); each names the protocol variant that measured it, and only rows of comparable "
        "variants share a table (`leaderboards/variants.py`). **Our rows** (bold) give mean ± sample std over seeds with the number of seeds; "
        "a row measured with one seed shows that run's spread over its samples or episodes instead. "
        "Each of our rows links its result record(s) and the model card of exactly the weights they measured "
        "(found by weights sha256), or says that card is gone.", "",
    ]
    if not result.n_records:
        lines += ["No result records of ours yet: `hexa demo` measures some on the embedded dataset; copy records "
                  "into `records/` beside this file (the default `--results`) and rerun `hexa leaderboard`.", ""]
    for part, embedded in (("Paper scale: ImageNet, VOC, COCO", False), ("Embedded dataset: CPU scale", True)):
        tables = [t for t in result.tables if is_embedded(t) == embedded]
        if not tables:
            continue
        lines += [f"## {part}", ""]
        if embedded:
            lines += ["These tables were measured on the embedded dataset (`hexa_zoo.embedded`: synthetic 64 px "
                      "images, minutes on a CPU). They rank models against each other at that scale and must never "
                      "be read beside the ImageNet-scale numbers above.", ""]
        for table in tables:
            frame, metrics = result.tables[table], result.metrics[table]
            lines += [f"### {family_of(table)[2]} — `{table}`", "", scale_line(table, frame), "",
                      protocol_line(frame), "",
                      markdown_table(frame, metrics), "", *remeasure_lines(frame),
                      f"CSV: [tables/{table_file_name(table)}.csv](tables/{table_file_name(table)}.csv)", ""]
    if plot_paths:
        lines += ["## Plots", ""]
        for title, path in plot_paths.items():
            lines += [f"**{title}**", "", f"![{title}]({relative_link(path, out)})", ""]
    lines += ["## Skipped files", ""]
    if result.skipped:
        lines += ["These files were found among the results but are not valid result records; they were "
                  "skipped (nothing was deleted):", ""]
        lines += [f"- `{relative_link(s.path, out)}`: {s.reason}" for s in result.skipped]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"
