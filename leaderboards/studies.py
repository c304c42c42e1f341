"""Study reports: a `hexa study` folder compiled into `board/studies/<name>/`.

    hexa leaderboard --studies studies/moco_pair_equal_epochs [more study folders]

Each report is a README.md (what ran: mode, budget, seeds, every cell's epochs, step cost and wall time;
then per HEXA/baseline pair and metric the per-seed values, the mean difference with its 95% paired
t-interval over seeds, the paired bootstrap over evaluation samples where there is one, and the verdict;
every record and run log linked) and differences.png with differences.svg (each metric's mean difference with
its t-interval; the web page inlines the SVG).
The same study folder compiles to byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from hexa_zoo.fileio import atomic_write_text

from .figures import _new_figure, _save


def _link(target: Path, start: Path) -> str:
    return os.path.relpath(target, start).replace(os.sep, "/")


def _fmt(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.2f}"


def study_report(study: Path, out_root: Path) -> Path:
    """Compile one study folder (summary.json, cells/, records/, runs/) into out_root/<name>/; returns it."""
    study = Path(study)
    summary_path = study / "summary.json"
    if not summary_path.is_file():
        from hexa_zoo.errors import ConfigError

        raise ConfigError(f"{study} has no summary.json", "run (or finish) the study with hexa study ... first")
    summary = json.loads(summary_path.read_text())
    out = Path(out_root) / study.name
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Study `{study.name}`", "",
             f"Mode **{summary['mode']}**, budget {summary['budget']}, seeds {summary['seeds']}, methods "
             f"{', '.join(summary['methods'])}; {summary['cells_done']} of {summary['cells_planned']} cells done.",
             f"Compute unit: {summary['compute_unit']}.", "",
             "| cell | epochs | step cost | pre-training wall time (s) | run log |", "|---|---:|---:|---:|---|"]
    for name, cell in sorted(summary["cells"].items()):
        log_csv = study / "runs" / name / "log.csv"
        link = f"[log.csv]({_link(log_csv, out)})" if log_csv.is_file() else "–"
        lines.append(f"| {name} | {cell['epochs']} | {cell['cost_per_step']} | {cell['pretrain_wall_s']} | {link} |")
    for pair, metrics in sorted(summary["comparisons"].items()):
        hexa, base = pair.split(" - ")
        lines += ["", f"## {pair}", "",
                  f"| metric | {base} per seed | {hexa} per seed | mean difference | 95% t-interval (seeds) | "
                  "bootstrap (samples) | verdict |", "|---|---|---|---:|---|---|---|"]
        for key, e in sorted(metrics.items()):
            t = e["t_interval"]
            boot = e.get("bootstrap_interval")
            boot_text = (f"[{_fmt(boot['low'])}, {_fmt(boot['high'])}], n={boot['n']}: {e['bootstrap_verdict']}"
                         if boot else "–")
            per_seed = {m: ", ".join(f"{v:.2f}" for v in e["values"][m]) for m in (base, hexa)}
            lines.append(f"| {key} | {per_seed[base]} | {per_seed[hexa]} | {_fmt(e['mean_difference'])} | "
                         f"[{_fmt(t['low'])}, {_fmt(t['high'])}] | {boot_text} | {e['verdict']} |")
    records = sorted((study / "records").glob("*.json")) if (study / "records").is_dir() else []
    lines += ["", "## Records", ""] + [f"- [{p.name}]({_link(p, out)})" for p in records]
    command = summary.get("command") or (  # summaries written before the command was recorded
        f"hexa study --methods {' '.join(summary['methods'])} --seeds {' '.join(map(str, summary['seeds']))} "
        f"--mode {summary['mode']} --budget {summary['budget']} --out {study.name}")
    lines += ["", f"Reproduce: `{command}`", ""]
    atomic_write_text(out / "README.md", "\n".join(lines))
    _differences_figure(summary, out / "differences.png")
    return out


def _differences_figure(summary: dict, path: Path) -> None:
    """One row per pair: every metric's mean difference and its t-interval, zero marked."""
    pairs = sorted(summary["comparisons"].items())
    if not pairs:
        return
    height = max(2.5, 0.35 * max(len(m) for _, m in pairs) + 1.2)
    fig, axes = _new_figure(7.5, height * len(pairs), nrows=len(pairs))
    for ax, (pair, metrics) in zip(axes, pairs):
        keys = sorted(metrics)
        for y, key in enumerate(keys):
            e = metrics[key]
            low, high = e["t_interval"]["low"], e["t_interval"]["high"]
            if not (math.isnan(low) or math.isnan(high)):
                ax.plot([low, high], [y, y], color="tab:blue", linewidth=2)
            ax.plot([e["mean_difference"]], [y], "o", color="tab:blue")
        ax.axvline(0.0, color="grey", linewidth=1, linestyle="--")
        ax.set_yticks(range(len(keys)), keys, fontsize=7)
        ax.set_title(f"{pair} ({summary['mode']}, {len(summary['seeds'])} seeds): mean and 95% t-interval",
                     fontsize=9)
    atomic_write_text(path.with_suffix(".svg"), _save(fig, path).svg)
