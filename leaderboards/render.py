"""Tables: which family a benchmark belongs to, one wide row per model, and the Markdown and CSV forms.

Published rows come first, in file order; ours follow, sorted. A published value is shown as its source
wrote it; ours as mean ± spread, saying what the spread is over (seeds, samples or episodes).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import pandas as pd

# Families, in the order the README shows them: (name, title, test on the table name).
FAMILIES = (
    ("manyshot", "Many-shot linear transfer (ssl-transfer linear.py)", lambda t: "manyshot" in t),
    ("manyshot_finetune", "Many-shot fine-tuning (ssl-transfer finetune.py)", lambda t: t == "finetune"),
    ("fewshot_kornblith", "Few-shot on the many-shot datasets (ssl-transfer few_shot.py)", lambda t: "kornblith" in t),
    ("cdfsl", "Cross-domain few-shot (CD-FSL, ssl-transfer few_shot.py)", lambda t: "cdfsl" in t),
    ("voc_detection", "VOC detection, frozen and fine-tuned trunk (ssl-transfer detectron2 configs)",
     lambda t: t.startswith("voc0712_det_r50fpn")),
    ("robustness", "Robustness: ImageNet-V2/R/A/Sketch top-1, ImageNet-C mCE",
     lambda t: "robustness" in t or re.fullmatch(r"imagenet_(v2|r|a|sketch|c)", t) is not None),
    ("adversarial", "Adversarial robustness of the linear probe (L-inf PGD)", lambda t: "adversarial" in t),
    ("linear", "Linear evaluation", lambda t: "linear" in t),
    ("knn", "kNN", lambda t: "knn" in t),
    ("lowshot", "Low-shot linear SVM (mAP per number of positives k)", lambda t: "svm" in t),
    ("semisup", "Semi-supervised fine-tuning", lambda t: "semisup" in t),
    ("detection", "Detection", lambda t: "det" in t),
    ("fewshot", "Few-shot episodes", lambda t: "fewshot" in t),
    ("finetune", "Full fine-tuning", lambda t: "finetune" in t),
    ("other", "Other benchmarks", lambda t: True),
)
REMEASURE_COLUMNS = ("remeasure", "remeasure_each", "remeasure_why")
METRIC_ORDER = ("top1", "top5", "top1@20", "top1@200", "AP50", "AP", "AP75", "APbb", "APmk", "top1_clean", "mCE")


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
    return (3, 0, natural_key(metric))  # folded tables: `eurosat acc_5w5s_centroid` before `... 5w20s ...`


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
    id_cols = ["kind", "model", "arch", "epochs", "protocol", "data", "preset", "source", "verified", "note",
               "config_id", "weights", "records", "card"]
    rows = []
    for row_id, group in entries.groupby("row_id", sort=False):
        first = group.iloc[0]
        row = {c: first[c] for c in id_cols}
        row["_sort"] = (0 if first["kind"] == "published" else 1, int(group["order"].min()), first["model"], row_id)
        row["n_over"] = first["n_over"]
        for c in REMEASURE_COLUMNS:  # published rows only (leaderboards/remeasure.py)
            row[c] = first.get(c) if isinstance(first.get(c), str) else ""
        for _, e in group.iterrows():
            row[e["metric"]] = e["mean"]
            row[f"{e['metric']}_std"] = e["std"]
            row[f"{e['metric']}_n"] = e["n"]
            row[f"{e['metric']}_ci95"] = e["ci95"]
            row[f"_{e['metric']}_text"] = e["value_text"]
            row[f"_{e['metric']}_over"] = e["n_over"]  # a folded row's datasets may count seeds or samples each
        rows.append(row)
    rows.sort(key=lambda r: r["_sort"])
    frame = pd.DataFrame(rows)
    columns = id_cols + ["n_over"] + [c for m in metrics for c in (m, f"{m}_std", f"{m}_n")]
    for c in columns + [f"{m}_ci95" for m in metrics] + [f"_{m}_{x}" for m in metrics for x in ("text", "over")]:
        if c not in frame:
            frame[c] = math.nan
    return frame, metrics


def finite(value) -> bool:
    """A cell that holds a finite number (not blank, NaN, infinite or text): what plots and the page compare."""
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def format_cell(row, metric: str) -> str:
    """A published value as its source wrote it; ours as mean ± spread, saying what the spread is over."""
    mean = row[metric]
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if row["kind"] == "published":
        text = row[f"_{metric}_text"]
        return text if isinstance(text, str) and text else f"{mean:g}"
    std, n, over = row[f"{metric}_std"], int(row[f"{metric}_n"]), row[f"_{metric}_over"]
    if n <= 1:
        return f"{mean:.2f} (1 {'seed' if over == 'seeds' else 'run'})"
    if over == "seeds":
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
                     f"{published['data'].iloc[0]} with the protocol variant each row names, as reported by the "
                     f"source named in each row{'; † = not verified by us' if (published['verified'] == 'no').any() else ''}.")
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


def protocol_line(frame: "pd.DataFrame") -> str:
    """The protocol variants of a table's rows, with their code; for a separate variant, why it stands apart."""
    from .variants import VARIANTS

    parts, apart = [], []
    for name in dict.fromkeys(frame["protocol"]):
        if name in VARIANTS:
            v = VARIANTS[name]
            parts.append(f"`{name}` ({v.code}: {v.what})")
            if v.separate:
                apart.append(f"A table of its own: {v.separate}.")
        else:
            parts.append(f"`{name}` (a preset of ours that no published protocol runs)")
    return " ".join(["Protocols: " + "; ".join(parts) + ".", *apart])


def our_links(row) -> list[tuple[str, str | None]]:
    """(label, relative target) of one of our rows' links, as the Markdown and the web page show them: its
    records, then the card of exactly its weights; a card no zoo folder holds any more has no target."""
    records = row["records"].split(";") if row["records"] else []
    links: list[tuple[str, str | None]] = [("record" if len(records) == 1 else f"record {i + 1}", p)
                                           for i, p in enumerate(records)]
    if row["card"]:
        links.append(("card", row["card"]))
    else:  # the record names weights that no zoo folder on this machine holds any more
        links.append((f"card gone (no zoo folder holds weights {row['weights'][:8]})" if row["weights"]
                      else "no card (the record names no weights)", None))
    return links


def our_note(row) -> str:
    """The note of one of our rows: its data (with fingerprint) and config."""
    return f"data {row['data']}; config {row['config_id']}"


def markdown_table(frame: "pd.DataFrame", metrics: Sequence[str]) -> str:
    """A wide table as Markdown: published rows with their source, ours in bold with links."""
    header = ["Model", "Arch", "Epochs", "Protocol", *metrics, "Source", "Note"]
    align = ["---"] * 4 + ["---:"] * len(metrics) + ["---"] * 2
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
            source = "ours: " + " · ".join(f"[{label}]({target})" if target else label
                                           for label, target in our_links(row))
            note = our_note(row)
        cells = [model, row["arch"], row["epochs"], row["protocol"], *(format_cell(row, m) for m in metrics), source,
                 note]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def remeasure_lines(frame: "pd.DataFrame") -> list[str]:
    """Under a table: the command that re-measures each published row with this project's protocol, or why none."""
    commands, reasons = [], {}
    for _, row in frame[frame["kind"] == "published"].iterrows():
        label = row["model"] + (f" ({row['epochs']} ep)" if row["epochs"] else "")
        if row["remeasure"]:
            commands.append(f"- {label}: `{row['remeasure']}`")
        elif row["remeasure_each"]:
            commands.append(f"- {label}: " + "; ".join(f"`{c}`" for c in row["remeasure_each"].split("\n")))
        else:
            reasons.setdefault(row["remeasure_why"], []).append(label)
    lines = []
    if commands:
        lines += ["Re-measure a published row here (the zoo fetches its weights; put your datasets' paths for "
                  "`/datasets/...`):", "", *commands, ""]
    if not commands and len(reasons) == 1:
        return [f"No command re-measures this table's published rows: {next(iter(reasons))}.", ""]
    lines += [f"No command for {', '.join(dict.fromkeys(labels))}: {why}." for why, labels in reasons.items()]
    return lines + [""] if reasons else lines


def _md_cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


def csv_frame(frame: "pd.DataFrame", metrics: Sequence[str]) -> "pd.DataFrame":
    def per_metric(m: str) -> tuple[str, ...]:
        with_ci = frame[f"{m}_ci95"].notna().any()
        return (m, f"{m}_std", f"{m}_n") + ((f"{m}_ci95",) if with_ci else ())

    columns = ["kind", "model", "arch", "epochs", "protocol", "data", "preset", "source", "verified", "note", "n_over",
               *[c for m in metrics for c in per_metric(m)], "config_id", "weights", "records", "card"]
    frame = frame[columns].copy()
    for m in metrics:  # counts are integers; published rows have none
        frame[f"{m}_n"] = frame[f"{m}_n"].astype("Int64")
    return frame


def table_file_name(table: str) -> str:
    """The table's name as a file name (tables/<name>.csv, plots/lowshot_<name>.png)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", table)
