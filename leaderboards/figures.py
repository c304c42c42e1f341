"""The leaderboard's plots: low-shot mAP against k, pre-training curves, HEXA against its baseline.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, so no global backend is switched), with
the default style. Each figure is saved twice: a PNG for the Markdown, and SVG text for the web page. Neither
carries metadata (no creation date or software version), and the SVG's ids are salted with a fixed string
instead of a random one, so the same inputs give byte-identical files.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from hexa_zoo.catalog import baseline_model
from hexa_zoo.fileio import atomic_write_bytes
from hexa_zoo.publish import recipe_of, zoo_folder_of

from .render import family_of, finite, table_file_name

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

HARDNESS_COLUMNS = (("loss_clean", "-", "clean view"), ("loss_adv", "--", "adversarial view"),
                    ("loss_cutmix", ":", "CutMix view"))


@dataclass(frozen=True)
class RunLog:
    """A pre-training run's CSV log and a label for it."""
    label: str
    path: Path


def find_runs(run_dirs: Iterable[str | Path], models: Sequence[dict] = ()) -> list[RunLog]:
    """Every `log.csv` under `run_dirs`, plus the run a zoo folder's recipe names as its `out` folder."""
    paths = []
    for d in run_dirs:
        d = Path(d)
        if not d.is_dir():
            log.warning("warning: runs folder %s does not exist; no pre-training curves from it", d)
            continue
        paths += sorted(d.rglob("log.csv"))
    for model in models:
        out = recipe_of(zoo_folder_of(model)).get("out")
        if isinstance(out, str) and (Path(out) / "log.csv").is_file():
            paths.append(Path(out) / "log.csv")
    unique = {p.resolve(): p for p in paths}
    return sorted((RunLog(_run_label(p), p) for p in unique.values()), key=lambda r: (r.label, str(r.path)))


def _run_label(log_csv: Path) -> str:
    """`method arch` from the config saved beside the log, else the run folder's name."""
    import yaml

    for name in ("config.yaml", "config.yml", "recipe.yaml"):
        path = log_csv.parent / name
        if path.is_file():
            try:
                cfg = yaml.safe_load(path.read_text()) or {}
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(cfg, dict) and cfg.get("method"):
                return " ".join(str(cfg[k]) for k in ("method", "arch") if cfg.get(k))
    return log_csv.parent.name


@dataclass(frozen=True)
class Plot:
    """A saved figure: its PNG file and the same figure as SVG text (for inlining in the web page)."""
    path: Path
    svg: str


def write_plots(tables: Mapping[str, "pd.DataFrame"], metrics: Mapping[str, Sequence[str]], runs: Sequence[RunLog],
                plots_dir: Path) -> dict[str, Plot]:
    """Write every plot the compiled tables (name -> wide frame, name -> metrics) and run logs allow; returns
    {title: Plot}. Missing inputs just mean fewer plots."""
    import matplotlib.style

    written: dict[str, Plot] = {}
    with matplotlib.style.context("default"):
        for table, frame in tables.items():
            if family_of(table)[1] == "lowshot":
                fig = lowshot_figure(table, frame, metrics[table])
                if fig is not None:
                    path = plots_dir / f"lowshot_{table_file_name(table)}.png"
                    written[f"Low-shot mAP against k: {table}"] = _save(fig, path)
        fig = pretrain_figure(runs)
        if fig is not None:
            written["Pre-training loss and view hardness"] = _save(fig, plots_dir / "pretrain_curves.png")
        fig = hexa_vs_baseline_figure(tables, metrics)
        if fig is not None:
            written["HEXA against its baseline (our rows)"] = _save(fig, plots_dir / "hexa_vs_baseline.png")
    return written


def _new_figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    """A figure on its own Agg canvas and its axes as a flat list."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(nrows, ncols, squeeze=False).ravel())


def _save(fig, path: Path) -> Plot:
    """Write the PNG at `path`; return it with the figure's SVG text."""
    import matplotlib

    buf = io.BytesIO()
    # No Software/creation tags: the bytes depend on the data alone.
    fig.savefig(buf, format="png", metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())
    svg = io.StringIO()
    # Text as <text> (small, selectable); ids salted with a constant instead of a fresh uuid per run.
    with matplotlib.rc_context({"svg.hashsalt": "hexa-zoo", "svg.fonttype": "none"}):
        fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    return Plot(Path(path), svg.getvalue())


def lowshot_figure(table: str, frame, metrics: Sequence[str]):
    """mAP against k (log2 axis) for every row that has per-k numbers; the full-data SVM as a dotted level."""
    ks = [(int(m[2]), metric) for metric in metrics if (m := re.fullmatch(r"(.+)@k(\d+)", metric))]
    if not ks:
        return None
    fig, (ax,) = _new_figure(7, 4.5)
    for i, (_, row) in enumerate(frame.iterrows()):
        color = f"C{i % 10}"
        label = f"{row['model']} ({'published' if row['kind'] == 'published' else 'ours'})"
        points = [(k, row[m], row[f"{m}_std"]) for k, m in ks if finite(row[m])]
        full = next((row[m] for m in metrics if m.endswith("@full") and finite(row[m])), None)
        if points:
            xs, ys, es = zip(*points)
            errors = [e if finite(e) else 0.0 for e in es]
            ax.errorbar(xs, ys, yerr=errors if any(errors) else None, marker="o", capsize=3, color=color, label=label)
        if full is not None:  # the full-data SVM as a level; a row with only that number gets a legend entry
            ax.axhline(full, linestyle=":", color=color, linewidth=1 if points else 1.5,
                       label=None if points else f"{label}, full data only")
    ax.set_xscale("log", base=2)
    ax.set_xticks([k for k, _ in ks], [str(k) for k, _ in ks])
    ax.set_xlabel("positives per class k")
    ax.set_ylabel("mAP (%)")
    ax.set_title(f"{table}: low-shot SVM (dotted: full-data SVM)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def pretrain_figure(runs: Sequence[RunLog]):
    """Left: each run's clean-view loss. Middle: each HEXA run's clean, adversarial and CutMix view losses.
    Right, where a run logged its online kNN monitor (`knn_top1`): that accuracy over the steps."""
    import pandas as pd

    logs = []
    for run in runs:
        try:
            df = pd.read_csv(run.path)
        except (OSError, ValueError, pd.errors.ParserError) as err:
            log.warning("warning: cannot read %s (%s); no curve for it", run.path, err)
            continue
        if "loss" not in df or df.empty:
            log.warning("warning: %s has no loss column; no curve for it", run.path)
            continue
        x = df["step"] if "step" in df else pd.Series(range(len(df)))
        logs.append((run.label, x, df))
    if not logs:
        return None
    monitored = [(label, x, df) for label, x, df in logs if "knn_top1" in df and df["knn_top1"].notna().any()]
    fig, axes = _new_figure(16 if monitored else 11, 4.5, ncols=3 if monitored else 2)
    ax_loss, ax_hard = axes[:2]
    colors = {}
    for label, x, df in logs:
        # The clean view's loss is what every method shares; a HEXA run's total adds its hard views' losses.
        column = "loss_clean" if "loss_clean" in df and df["loss_clean"].notna().any() else "loss"
        line, = ax_loss.plot(x, _smooth(df[column]), marker=".", label=f"{label} ({column})")
        colors[label] = line.get_color()
    ax_loss.set(xlabel="step", ylabel="loss (smoothed)", title="Pre-training loss (clean view)")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    any_hard = False
    for label, x, df in logs:
        hard = [c for c, _, _ in HARDNESS_COLUMNS[1:] if c in df and df[c].notna().any()]
        if not hard or "loss_clean" not in df:
            continue
        any_hard = True
        for column, style, name in HARDNESS_COLUMNS:
            if column in df and df[column].notna().any():
                ax_hard.plot(x, _smooth(df[column]), linestyle=style, marker=".", color=colors[label],
                             label=f"{label}: {name}")
    if any_hard:
        ax_hard.set(xlabel="step", ylabel="loss (smoothed)",
                    title="View hardness: hard views' loss beside the clean view's")
        ax_hard.legend(fontsize=7)
    else:
        ax_hard.text(0.5, 0.5, "no run logged hard-view losses", ha="center", va="center", transform=ax_hard.transAxes)
        ax_hard.set_axis_off()
    ax_hard.grid(alpha=0.3)
    if monitored:
        ax_knn = axes[2]
        for label, x, df in monitored:
            rows = df["knn_top1"].notna()
            ax_knn.plot(x[rows], df["knn_top1"][rows], marker="o", color=colors[label], label=label)
        ax_knn.set(xlabel="step", ylabel="kNN top-1 (%)", title="Online kNN monitor (held-out split)")
        ax_knn.grid(alpha=0.3)
        ax_knn.legend(fontsize=8)
    return fig


def _smooth(series):
    window = max(1, len(series) // 50)
    return series.astype(float).rolling(window, min_periods=1).mean()


def hexa_vs_baseline_pairs(tables: Mapping[str, "pd.DataFrame"], metrics: Mapping[str, Sequence[str]]
                           ) -> dict[str, list[tuple]]:
    """{"hexa vs base": [(table:metric, hexa mean, hexa std, base mean, base std), ...]} over our rows."""
    pairs: dict[str, list[tuple]] = {}
    for table, frame in tables.items():
        ours = frame[frame["kind"] == "ours"]
        for _, hexa in ours.iterrows():
            base_model = baseline_model(hexa["model"])
            if base_model is None:
                continue
            same = ours[(ours["model"] == base_model) & (ours["data"] == hexa["data"]) &
                        (ours["preset"] == hexa["preset"]) & (ours["config_id"] == hexa["config_id"])]
            if same.empty:
                continue
            base = same.iloc[0]
            for metric in metrics[table]:
                if finite(hexa[metric]) and finite(base[metric]):
                    pairs.setdefault(f"{hexa['model']} vs {base_model}", []).append(
                        (f"{table}\n{metric}", hexa[metric], _std(hexa, metric), base[metric], _std(base, metric)))
    return pairs


def _std(row, metric: str) -> float:
    std = row[f"{metric}_std"]
    return float(std) if finite(std) and row[f"_{metric}_over"] == "seeds" else 0.0


def hexa_vs_baseline_figure(tables: Mapping[str, "pd.DataFrame"], metrics: Mapping[str, Sequence[str]]):
    """Grouped bars, one panel per HEXA/baseline pair; error bars are the std over seeds where n > 1."""
    pairs = hexa_vs_baseline_pairs(tables, metrics)
    if not pairs:
        return None
    width = max(6.0, 0.55 * max(len(v) for v in pairs.values()) + 2)
    fig, axes = _new_figure(width, 4.8 * len(pairs), nrows=len(pairs))
    for ax, (title, bars) in zip(axes, sorted(pairs.items())):
        labels = [b[0] for b in bars]
        xs = range(len(bars))
        hexa_name, base_name = title.split(" vs ")
        for offset, mean_i, std_i, name in ((-0.2, 3, 4, base_name), (0.2, 1, 2, hexa_name)):
            errors = [b[std_i] for b in bars]
            ax.bar([x + offset for x in xs], [b[mean_i] for b in bars], 0.4, label=name,
                   yerr=errors if any(errors) else None, capsize=2)
        ax.set_xticks(list(xs), labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("metric (%); error bars: std over seeds")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    return fig

