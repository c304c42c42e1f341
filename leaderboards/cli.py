"""`hexa leaderboard`: compile result records and published numbers into tables, CSVs and plots.

Reads result records (`--results`, default `<out>/records`) and published numbers (`--published`, default
`<out>/published.csv`, else the package's own), and writes README.md, tables/, plots/ and the web page
site/index.html under `--out` (default `board/`, the committed board). See leaderboards.compiler for what goes into a table.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from hexa_zoo.errors import ConfigError

from .compiler import DEFAULT_OUT, compile_leaderboard
from .published import SOURCES, refresh_published

log = logging.getLogger(__name__)

EPILOG = """examples:
  hexa leaderboard --results results/ --out my_board/
  hexa leaderboard --results hexa_demo/results --out hexa_demo/leaderboard --runs hexa_demo/runs
  hexa leaderboard --refresh-published          # rebuild published.csv from leaderboards/sources/
  hexa leaderboard --studies studies/moco_pair_equal_epochs   # -> board/studies/moco_pair_equal_epochs/
  hexa leaderboard --update-cards   # and each zoo card's model-index, for the Hub page

Without --results, records are read from <out>/records when that folder exists. Corrupt or foreign
JSON files are reported and skipped. Recompiling the same records gives byte-identical output.
"""


def build_parser() -> argparse.ArgumentParser:
    """The `hexa leaderboard` argument parser."""
    p = argparse.ArgumentParser(prog="hexa leaderboard", description=__doc__.split("\n\n")[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", nargs="+", action="extend", metavar="DIR",
                   help="folders of result records (searched recursively); default: <out>/records if it exists")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: board/)")
    p.add_argument("--published", metavar="CSV", help="published references (default: <out>/published.csv, "
                   "else the published.csv installed with leaderboards)")
    p.add_argument("--runs", nargs="+", action="extend", default=[], metavar="DIR",
                   help="pre-training output folders (with log.csv) to plot loss and view hardness from")
    p.add_argument("--refresh-published", nargs="*", metavar="SRC",
                   help="rebuild <out>/published.csv (or --published) from the published sources SRC (CSV files or "
                        "folders of them; default leaderboards/sources/, each row naming its source), then compile")
    p.add_argument("--no-plots", action="store_true", help="write the tables only")
    p.add_argument("--update-cards", action="store_true",
                   help="also write each zoo model card's model-index (its Hub results) from the records that "
                        "measured its weights (matched by weights sha256)")
    p.add_argument("--studies", nargs="+", action="extend", default=[], metavar="DIR",
                   help="`hexa study` output folders to compile into <out>/studies/<name>/ (tables and plots)")
    return p


def main(argv: list[str] | None = None) -> int:
    """`hexa leaderboard`: compile, print what was written and what was skipped."""
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if args.refresh_published is not None:
        dst = Path(args.published) if args.published else out / "published.csv"
        refresh_published(dst, args.refresh_published or None)
        print(f"rebuilt {dst} from {', '.join(args.refresh_published) or SOURCES}")
    for study in args.studies:
        from .studies import study_report

        print(f"study {study} -> {study_report(Path(study), out / 'studies')}")
    if args.studies and args.results is None:
        return 0  # only the studies were asked for
    results = args.results
    if results is None:
        if not (out / "records").is_dir():  # nothing to compile: never leave an empty board/ behind
            raise ConfigError(f"no records to compile: --results not given and {out / 'records'} does not exist",
                              "pass --results DIR (the --out of hexa transfer) and --out DIR for the leaderboard")
        results = [out / "records"]
    found = [p for r in results for p in Path(r).rglob("*.json")] if all(Path(r).is_dir() for r in results) else None
    if found == []:
        log.warning("warning: no result records (*.json) under %s: every table will be empty",
                    ", ".join(map(str, results)))
    compiled = compile_leaderboard(results, out, published=args.published, runs=args.runs, plots=not args.no_plots)
    print(f"{compiled.n_records} record(s), {len(compiled.tables)} table(s) -> {compiled.readme}, {compiled.site}")
    if args.update_cards:
        from .model_index import update_cards

        cards, orphans = update_cards(compiled.records)  # the records just compiled, not read a second time
        for card in cards:
            print(f"model-index written: {card}")
        if orphans:
            print(f"{len(orphans)} record(s) measured weights that no zoo card holds (no card updated for them)")
    if compiled.skipped:
        print(f"skipped {len(compiled.skipped)} file(s) (listed at the end of {compiled.readme}):")
        for s in compiled.skipped:
            print(f"  {s.path}: {s.reason}")
    return 0
