"""`hexa leaderboard`: compile result records and published numbers into tables, CSVs and plots.

Inputs are files a person can hold: result records (hexa_zoo.records; any number of folders) and
`leaderboards/published.csv` (every published number with its source and whether we verified it).
Output, under `--out` (default `leaderboards/`):

    README.md             one table per benchmark, published rows beside ours
    tables/<table>.csv    the same tables, machine-readable
    plots/*.png           low-shot mAP against k, pre-training curves, HEXA against its baseline

Our rows are grouped by model (name and weights), benchmark, preset and config, and data fingerprint,
then aggregated over seeds: mean ± sample std with n seeds. With a single seed the row shows the run's
own spread over its samples or episodes instead, and says so. Records measured on the embedded dataset,
or with a preset other than `paper`, never share a table with published (ImageNet-scale) numbers.

The output depends only on the inputs: rows are sorted, there are no timestamps, links are relative,
and the PNGs carry no creation metadata, so recompiling the same records gives byte-identical files.
pandas and matplotlib are imported inside functions so that `import hexa_zoo` stays light.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from .errors import DataError
from .fileio import atomic_write_text
from .records import SkippedFile, read_records

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path("leaderboards")
DEFAULT_REFERENCES = REPO_ROOT.parent / "shared" / "reference_results.csv"
PUBLISHED_COLUMNS = ("method", "arch", "epochs", "benchmark", "metric", "value", "source", "note")

# Families, in the order the README shows them: (name, title, test on the table name).
FAMILIES = (
    ("linear", "Linear evaluation", lambda t: "linear" in t),
    ("knn", "kNN", lambda t: "knn" in t),
    ("lowshot", "Low-shot linear SVM (mAP per number of positives k)", lambda t: "svm" in t),
    ("semisup", "Semi-supervised fine-tuning", lambda t: "semisup" in t),
    ("detection", "Detection", lambda t: "det" in t),
    ("fewshot", "Few-shot episodes", lambda t: "fewshot" in t),
    ("finetune", "Full fine-tuning", lambda t: "finetune" in t),
    ("other", "Other benchmarks", lambda t: True),
)
METRIC_ORDER = ("top1", "top5", "top1@20", "top1@200", "AP50", "AP", "AP75", "APbb", "APmk")
DATASET_NAMES = {"imagenet": "ImageNet-1k", "voc07": "PASCAL VOC2007", "voc0712": "PASCAL VOC07+12",
                 "coco": "COCO 2017", "embedded": "the embedded dataset"}
# Config keys that say where or how fast a run went, not what it measured: ignored when grouping.
IGNORED_CONFIG_KEYS = frozenset({"seed", "out", "out_dir", "output_dir", "cache", "cache_dir", "feature_cache",
                                 "num_workers", "workers", "device", "progress", "threads", "resume"})


# ---------------------------------------------------------------- published references

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


# ---------------------------------------------------------------- our records

def config_id(config: dict) -> str:
    """A short hash of a protocol config without the keys that do not change what was measured."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in IGNORED_CONFIG_KEYS}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node
    return hashlib.sha256(json.dumps(strip(config), sort_keys=True, default=str).encode()).hexdigest()[:8]


def table_of(record: dict) -> str:
    """The table a record belongs in; embedded or non-paper runs never join a published table."""
    benchmark = str(record["benchmark"])
    dataset = str(record["dataset"].get("name", ""))
    preset = record.get("preset")
    if dataset == "embedded" and not benchmark.startswith("embedded"):
        return f"embedded_{benchmark}"
    if not benchmark.startswith("embedded") and preset not in (None, "paper"):
        return f"{benchmark}_{preset}_preset"
    return benchmark


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


def our_entries(records: Sequence[dict], out: Path) -> list[dict]:
    """Long-format entries for our records: grouped, deduplicated per seed, aggregated over seeds."""
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
        zoo_folder = zoo_folder_of(runs[0]["model"])
        recipe = recipe_of(zoo_folder)
        if recipe.get("weights_sha256") not in (None, weights):
            recipe = {}  # the folder now holds other weights (retrained since): its recipe is not this row's
        links = ";".join(_rel(Path(r["_path"]), out) for r in runs)
        base = {
            "table": table, "kind": "ours", "order": 0,
            "row_id": "|".join((model, weights, preset, cfg_id, fingerprint)), "model": model,
            "arch": str(runs[0]["model"].get("arch") or recipe.get("arch", "")),
            "epochs": str(recipe.get("epochs", "")),
            "data": f"{dataset} ({fingerprint.split(':')[-1][:8]})" if fingerprint else dataset, "preset": preset,
            "source": "this repo", "verified": "yes", "value_text": "",
            "note": " ".join(sorted({n for r in runs for n in r.get("notes", []) if isinstance(n, str)})),
            "records": links, "recipe": _rel(zoo_folder / recipe["file"], out) if recipe else "",
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
            entries.append({**base, **stats, "metric": name})
    return entries


def _rel(path: Path, start: Path) -> str:
    """A relative, forward-slashed link, so the README works wherever the folder is moved with its records."""
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


def zoo_folder_of(model: dict) -> Path | None:
    """The zoo folder the weights came from, if it is still on this machine."""
    source = model.get("source")
    candidates = []
    if isinstance(source, str) and source:
        src = Path(source)
        candidates += [src, src.parent]
    name = model.get("name")
    if isinstance(name, str) and name and "/" not in name:
        candidates.append(_zoo_home() / name)
    for c in candidates:
        try:
            if c.is_dir() and (c / "config.json").is_file():
                return c
        except OSError:
            continue
    return None


def _zoo_home() -> Path:
    try:
        from .weights import zoo_home
    except ImportError:  # the weights module is optional here: only links depend on it
        return Path(os.environ.get("HEXA_ZOO_HOME", Path.home() / ".cache" / "hexa_zoo"))
    return zoo_home()


def recipe_of(folder: Path | None) -> dict:
    """The pre-training recipe a zoo folder records (arch, epochs, out...), and the file to link.

    Looked for in config.json (a `recipe` key anywhere), else in the model card's `## Recipe`
    section (a fenced YAML block, as hexa_zoo.publish writes it).
    """
    if folder is None:
        return {}
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    recipe = _find_key(config, "recipe")
    card = folder / "README.md"
    if not isinstance(recipe, dict) and card.is_file():
        recipe = _card_recipe(card.read_text(encoding="utf-8", errors="replace"))
    recipe = dict(recipe) if isinstance(recipe, dict) else {}
    recipe.setdefault("arch", config.get("architecture", ""))
    if isinstance(sha := _find_key(config, "weights_sha256"), str):
        recipe["weights_sha256"] = sha
    recipe["file"] = "README.md" if card.is_file() else "config.json"
    return recipe


def _card_recipe(card: str) -> dict | None:
    import yaml

    m = re.search(r"^## Recipe\s*\n+```ya?ml\n(.*?)^```", card, flags=re.M | re.S)
    if not m:
        return None
    try:
        loaded = yaml.safe_load(m[1])
    except yaml.YAMLError:
        return None
    return loaded if isinstance(loaded, dict) else None


def _find_key(node, key: str):
    if isinstance(node, dict):
        if key in node:
            return node[key]
        for v in node.values():
            if (found := _find_key(v, key)) is not None:
                return found
    return None


# ---------------------------------------------------------------- tables

def family_of(table: str) -> tuple[int, str, str]:
    """(position, name, title) of the benchmark family a table belongs to (FAMILIES order)."""
    for i, (name, title, test) in enumerate(FAMILIES):
        if test(table):
            return i, name, title
    raise AssertionError("the last family accepts everything")


def metric_sort_key(metric: str) -> tuple:
    """Column order: the usual metrics first, then per-k metrics by k, then `@full`, then the rest."""
    if metric in METRIC_ORDER:
        return (0, METRIC_ORDER.index(metric), "")
    if m := re.fullmatch(r"(.+)@k(\d+)", metric):
        return (1, int(m[2]), m[1])
    if metric.endswith("@full"):
        return (2, 0, metric)
    return (3, 0, metric)


def natural_key(text: str) -> tuple:
    """Numbers compare as numbers: semisup_1pct before semisup_10pct."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def is_embedded(table: str) -> bool:
    """Whether a table holds embedded-dataset numbers (shown apart from the paper-scale tables)."""
    return table.startswith("embedded")


def wide_table(entries: "pd.DataFrame") -> tuple["pd.DataFrame", list[str]]:
    """One row per model (published rows first, in file order; ours sorted), per-metric columns."""
    import pandas as pd

    metrics = sorted(entries["metric"].unique(), key=metric_sort_key)
    id_cols = ["kind", "model", "arch", "epochs", "data", "preset", "source", "verified", "note",
               "config_id", "weights", "records", "recipe"]
    rows = []
    for row_id, group in entries.groupby("row_id", sort=False):
        first = group.iloc[0]
        row = {c: first[c] for c in id_cols}
        row["_sort"] = (0 if first["kind"] == "published" else 1, int(group["order"].min()), first["model"], row_id)
        row["n_over"] = first["n_over"]
        for _, e in group.iterrows():
            row[e["metric"]] = e["mean"]
            row[f"{e['metric']}_std"] = e["std"]
            row[f"{e['metric']}_n"] = e["n"]
            row[f"{e['metric']}_ci95"] = e["ci95"]
            row[f"_{e['metric']}_text"] = e["value_text"]
        rows.append(row)
    rows.sort(key=lambda r: r["_sort"])
    frame = pd.DataFrame(rows)
    columns = id_cols + ["n_over"] + [c for m in metrics for c in (m, f"{m}_std", f"{m}_n")]
    for c in columns + [f"{m}_ci95" for m in metrics] + [f"_{m}_text" for m in metrics]:
        if c not in frame:
            frame[c] = math.nan
    return frame, metrics


def format_cell(row, metric: str) -> str:
    """A published value as its source wrote it; ours as mean ± spread, saying what the spread is over."""
    mean = row[metric]
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if row["kind"] == "published":
        text = row[f"_{metric}_text"]
        return text if isinstance(text, str) and text else f"{mean:g}"
    std, n = row[f"{metric}_std"], int(row[f"{metric}_n"])
    if n <= 1:
        return f"{mean:.2f} (1 {'seed' if row['n_over'] == 'seeds' else 'run'})"
    if row["n_over"] == "seeds":
        return f"{mean:.2f} ± {std:.2f} ({n} seeds)"
    ci95 = row[f"{metric}_ci95"]
    if isinstance(ci95, float) and math.isfinite(ci95):
        return f"{mean:.2f} ± {ci95:.2f} (95% CI, {n} samples)"
    return f"{mean:.2f} ± {std:.2f} ({n} samples)"


def scale_line(table: str, frame: "pd.DataFrame") -> str:
    """What our rows were measured on, so nobody mistakes an embedded number for an ImageNet one."""
    ours = frame[frame["kind"] == "ours"]
    published = frame[frame["kind"] == "published"]
    parts = []
    if len(published):
        parts.append(f"Published rows: ResNet-50 pre-trained on ImageNet-1k (self-supervised unless named "
                     f"Supervised), evaluated on "
                     f"{published['data'].iloc[0]} with the paper protocol, as reported by the source named "
                     f"in each row{'; † = not verified by us' if (published['verified'] == 'no').any() else ''}.")
    if len(ours):
        data = ", ".join(f"`{d}`" for d in sorted(ours["data"].unique()))
        presets = ", ".join(f"`{p}`" for p in sorted(ours["preset"].unique()))
        text = f"Our rows: measured here on {data} with preset {presets}"
        if is_embedded(table):
            text += (" — the embedded dataset is small synthetic 64 px images made by `hexa_zoo.embedded` "
                     "(CPU scale, minutes of training): these numbers compare models with each other, "
                     "never with the ImageNet-scale tables")
        elif not table.endswith("_preset") and not len(published):
            text += " (no published numbers for this benchmark)"
        parts.append(text + ".")
    return " ".join(parts)


def markdown_table(frame: "pd.DataFrame", metrics: Sequence[str]) -> str:
    """A wide table as Markdown: published rows with their source, ours in bold with links."""
    header = ["Model", "Arch", "Epochs", *metrics, "Source", "Note"]
    align = ["---"] * 3 + ["---:"] * len(metrics) + ["---"] * 2
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    ours = frame[frame["kind"] == "ours"]
    # One name, several weights (a model retrained under the same name): tell the rows apart.
    retrained = {m for m, g in ours.groupby("model") if g["weights"].nunique() > 1}
    for _, row in frame.iterrows():
        if row["kind"] == "published":
            model = row["model"] + (" †" if row["verified"] == "no" else "")
            source = row["source"]
            note = row["note"]
        else:
            model = f"**{row['model']}**" + (f" (weights {row['weights'][:8]})" if row["model"] in retrained else "")
            records = row["records"].split(";") if row["records"] else []
            links = [f"[record]({records[0]})"] if len(records) == 1 else \
                [f"[record {i + 1}]({p})" for i, p in enumerate(records)]
            if row["recipe"]:
                links.append(f"[recipe]({row['recipe']})")
            source = "ours: " + " · ".join(links)
            note = f"data {row['data']}; config {row['config_id']}"
        cells = [model, row["arch"], row["epochs"], *(format_cell(row, m) for m in metrics), source, note]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _md_cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _csv_frame(frame: "pd.DataFrame", metrics: Sequence[str]) -> "pd.DataFrame":
    def per_metric(m: str) -> tuple[str, ...]:
        with_ci = frame[f"{m}_ci95"].notna().any()
        return (m, f"{m}_std", f"{m}_n") + ((f"{m}_ci95",) if with_ci else ())

    columns = ["kind", "model", "arch", "epochs", "data", "preset", "source", "verified", "note", "n_over",
               *[c for m in metrics for c in per_metric(m)], "config_id", "weights", "records", "recipe"]
    frame = frame[columns].copy()
    for m in metrics:  # counts are integers; published rows have none
        frame[f"{m}_n"] = frame[f"{m}_n"].astype("Int64")
    return frame


# ---------------------------------------------------------------- compile

@dataclass
class Compiled:
    """What one compilation wrote and what it skipped."""
    out: Path
    tables: dict = field(default_factory=dict)          # table name -> wide DataFrame
    metrics: dict = field(default_factory=dict)         # table name -> metric names
    written: list[Path] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    n_records: int = 0

    @property
    def readme(self) -> Path:
        return self.out / "README.md"


def find_published(out: Path, published: str | os.PathLike | None) -> Path | None:
    """`--published`, else `<out>/published.csv`, else the checkout's leaderboards/published.csv, else the
    copy installed with the package (hexa_zoo/published.csv links to the checkout's file; a wheel holds it)."""
    if published is not None:
        path = Path(published)
        if not path.is_file():
            raise DataError(f"published references {path} do not exist",
                            "pass --published PATH, or rebuild it with "
                            "--refresh-published ../shared/reference_results.csv")
        return path
    for path in (out / "published.csv", REPO_ROOT / "leaderboards" / "published.csv",
                 Path(__file__).with_name("published.csv")):
        if path.is_file():
            return path
    return None


def compile_leaderboard(results: Sequence[str | os.PathLike], out: str | os.PathLike = DEFAULT_OUT, *,
                        published: str | os.PathLike | None = None, runs: Sequence[str | os.PathLike] = (),
                        plots: bool = True) -> Compiled:
    """Read records and published numbers, write README.md, tables/*.csv and plots/*.png under `out`."""
    import pandas as pd

    out = Path(out)
    result_dirs = [Path(d) for d in results]
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

    published_path = find_published(out, published)
    entries = our_entries(good, out)
    if published_path is not None:
        entries += published_entries(published_path)
    else:
        log.warning("warning: no published.csv found; compiling our rows only")
    long = pd.DataFrame(entries)

    result = Compiled(out=out, skipped=skipped, n_records=len(good))
    if len(long):
        for table in sorted(long["table"].unique(), key=lambda t: (is_embedded(t), family_of(t)[0], natural_key(t))):
            frame, metrics = wide_table(long[long["table"] == table])
            result.tables[table], result.metrics[table] = frame, metrics

    (out / "tables").mkdir(parents=True, exist_ok=True)
    for table, frame in result.tables.items():
        path = out / "tables" / f"{table_file_name(table)}.csv"
        atomic_write_text(path, _csv_frame(frame, result.metrics[table]).to_csv(index=False, float_format="%.4f",
                                                                                 lineterminator="\n"))
        result.written.append(path)
    plot_paths: dict[str, Path] = {}
    if plots:
        from . import leaderboard_plots

        run_dirs = leaderboard_plots.find_runs(runs, [r["model"] for r in good])
        plot_paths = leaderboard_plots.write_plots(result, run_dirs, out / "plots")
        result.written += list(plot_paths.values())
    _remove_stale(out, result.written)
    readme = render_readme(result, result_dirs, published_path, plot_paths)
    atomic_write_text(result.readme, readme)
    result.written.append(result.readme)
    return result


def table_file_name(table: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", table)


def _remove_stale(out: Path, written: Sequence[Path]) -> None:
    """Tables and plots of an earlier compile that this one did not write (only in our own subfolders)."""
    keep = {p.resolve() for p in written}
    for sub, pattern in (("tables", "*.csv"), ("plots", "*.png")):
        for path in (out / sub).glob(pattern):
            if path.resolve() not in keep:
                path.unlink()


def render_readme(result: Compiled, result_dirs: Sequence[Path], published_path: Path | None,
                  plot_paths: dict[str, Path]) -> str:
    """The compiled README: paper-scale tables, then embedded ones, then plots and the skipped files."""
    out = result.out
    dirs = ", ".join(f"`{_rel(d, out)}`" for d in result_dirs) or "no folder"
    pub = f"`{_rel(published_path, out)}`" if published_path else "no published.csv"
    lines = [
        "# Leaderboards", "",
        "Compiled by `hexa leaderboard` — do not edit by hand; rerun it after adding result records.", "",
        f"Sources: {result.n_records} result record(s) from {dirs}; published numbers from {pub}.", "",
        "Published rows are numbers as reported by the source named in each row (ResNet-50, ImageNet-1k "
        "pre-training). **Our rows** (bold) give mean ± sample std over seeds with the number of seeds; "
        "a row measured with one seed shows that run's spread over its samples or episodes instead. "
        "Each of our rows links its result record(s) and the recipe (model card) of its weights.", "",
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
                      markdown_table(frame, metrics), "",
                      f"CSV: [tables/{table_file_name(table)}.csv](tables/{table_file_name(table)}.csv)", ""]
    if plot_paths:
        lines += ["## Plots", ""]
        for title, path in plot_paths.items():
            lines += [f"**{title}**", "", f"![{title}]({_rel(path, out)})", ""]
    lines += ["## Skipped files", ""]
    if result.skipped:
        lines += ["These files were found among the results but are not valid result records; they were "
                  "skipped (nothing was deleted):", ""]
        lines += [f"- `{_rel(s.path, out)}`: {s.reason}" for s in result.skipped]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- command line

EPILOG = """examples:
  hexa leaderboard --results runs/results
  hexa leaderboard --results hexa_demo/results --out hexa_demo/leaderboard --runs hexa_demo/runs
  hexa leaderboard --refresh-published ../shared/reference_results.csv

Without --results, records are read from <out>/records when that folder exists. Corrupt or foreign
JSON files are reported and skipped. Recompiling the same records gives byte-identical output.
"""


def build_parser() -> argparse.ArgumentParser:
    """The `hexa leaderboard` argument parser."""
    p = argparse.ArgumentParser(prog="hexa leaderboard", description=__doc__.split("\n\n")[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", nargs="+", action="extend", metavar="DIR",
                   help="folders of result records (searched recursively); default: <out>/records if it exists")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: leaderboards/)")
    p.add_argument("--published", metavar="CSV", help="published references (default: <out>/published.csv, "
                   "else the checkout's leaderboards/published.csv)")
    p.add_argument("--runs", nargs="+", action="extend", default=[], metavar="DIR",
                   help="pre-training output folders (with log.csv) to plot loss and view hardness from")
    p.add_argument("--refresh-published", nargs="?", const=str(DEFAULT_REFERENCES), metavar="SRC",
                   help="rebuild <out>/published.csv from SRC (default ../shared/reference_results.csv), then compile")
    p.add_argument("--no-plots", action="store_true", help="write the tables only")
    return p


def main(argv: list[str] | None = None) -> int:
    """`hexa leaderboard`: compile, print what was written and what was skipped."""
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if args.refresh_published:
        dst = Path(args.published) if args.published else out / "published.csv"
        refresh_published(args.refresh_published, dst)
        print(f"rebuilt {dst} from {args.refresh_published}")
    results = args.results
    if results is None:
        results = [out / "records"] if (out / "records").is_dir() else []
    compiled = compile_leaderboard(results, out, published=args.published, runs=args.runs, plots=not args.no_plots)
    print(f"{compiled.n_records} record(s), {len(compiled.tables)} table(s) -> {compiled.readme}")
    if compiled.skipped:
        print(f"skipped {len(compiled.skipped)} file(s) (listed at the end of {compiled.readme}):")
        for s in compiled.skipped:
            print(f"  {s.path}: {s.reason}")
    return 0
