"""Where a number goes: the table and the column of one (benchmark, metric, variant), ours and published alike.

Three rules, applied in order:
1. Published low-shot rows name one benchmark per k (`voc07_lowshot_svm_k8`); they join the one low-shot
   table with a metric per k (`mAP@k8`), as our records write it.
2. A variant that is `separate` (leaderboards/variants.py) gets its own table, `<benchmark>_<variant>`
   (one table `<variant>` for all its benchmarks when it folds).
3. The protocols that run once per dataset (many-shot, fine-tune, few-shot, CD-FSL, the ImageNet robustness sets)
   are read across datasets, so their per-dataset benchmarks fold into one table with a column per
   dataset and metric (`cifar10_manyshot` top1 -> table `manyshot`, column `cifar10 top1`); ssl-transfer's
   VOC detection folds its frozen and fine-tuned trunks the same way. ImageNet-C
   keeps its own table of per-corruption errors too; the robustness table takes its mCE.
Embedded tables are never folded: they are measured on one synthetic dataset and stay apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .variants import VARIANTS


@dataclass(frozen=True)
class Combined:
    pattern: str                  # a benchmark it folds: group 1 names the dataset
    metrics: tuple[str, ...]      # the metrics it takes (empty: all)
    data: str                     # what its published rows were evaluated on, for the table's caption
    keep: bool = False            # the benchmark's own table stays as well


COMBINED: dict[str, tuple[Combined, ...]] = {
    "manyshot": (Combined(r"([a-z0-9]+)_manyshot", (), "the many-shot datasets (one column each)"),),
    "finetune": (Combined(r"([a-z0-9]+)_finetune", (), "the many-shot datasets (one column each)"),),
    "cdfsl": (Combined(r"([a-z0-9]+)_cdfsl", (), "the CD-FSL datasets (one column per dataset and shots)"),),
    # ssl-transfer's few-shot episodes on Kornblith et al.'s many-shot datasets (its Tables 2, 6, 7)
    "fewshot_kornblith": (Combined(r"([a-z0-9]+)_fewshot_kornblith", (),
                                   "the many-shot datasets (one column per dataset and shots)"),),
    # ssl-transfer's VOC detection (its Table 4): the frozen and the fine-tuned trunk side by side
    "voc0712_det_r50fpn": (Combined(r"voc0712_det_r50fpn_(frozen|finetune)", (),
                                    "PASCAL VOC07+12 (one column per trunk setting and metric)"),),
    # transfer/protocols/robustness.py's sets; ImageNet-C gives mCE here and its per-corruption errors in `imagenet_c`
    "imagenet_robustness": (Combined(r"(imagenet_(?:v2|r|a|sketch))", ("top1",), "the ImageNet robustness sets"),
                            Combined(r"(imagenet_c)", ("mCE",), "the ImageNet robustness sets", keep=True)),
}
# Keys of a protocol's config that only say which dataset ran: a model's rows across datasets fold into one row.
DATASET_KEYS = frozenset({"dataset", "train_list", "test_list"})


def split_lowshot(benchmark: str, metric: str) -> tuple[str, str]:
    """Published low-shot rows name one benchmark per k; records name one table with a metric per k."""
    if m := re.fullmatch(r"(.+_lowshot_svm)_k(\d+)", benchmark):
        return m[1], f"{metric}@k{m[2]}"
    if m := re.fullmatch(r"(.+)_svm_full", benchmark):
        return f"{m[1]}_lowshot_svm", f"{metric}@full"
    return benchmark, metric


def is_separate(variant: str | None) -> bool:
    return bool(variant and VARIANTS[variant].separate)


def place(benchmark: str, metric: str, variant: str | None) -> list[tuple[str, str]]:
    """[(table, column)] for one number: usually one place; ImageNet-C's mCE two."""
    benchmark, metric = split_lowshot(benchmark, metric)
    if is_separate(variant):
        if VARIANTS[variant].fold:
            return [(variant, f"{benchmark} {metric}")]
        return [(f"{benchmark}_{variant}", metric)]
    if benchmark.startswith("embedded"):
        return [(benchmark, metric)]
    for table, rules in COMBINED.items():
        for rule in rules:
            m = re.fullmatch(rule.pattern, benchmark)
            if not m or m[1].startswith("embedded"):
                continue
            places = [(table, f"{m[1]} {metric}")] if not rule.metrics or metric in rule.metrics else []
            if rule.keep or not places:  # a metric the folded table does not take stays in its own
                places.append((benchmark, metric))
            return places
    return [(benchmark, metric)]


def combined_data(table: str) -> str | None:
    """The caption's 'evaluated on ...' of a folded table (None: not a folded table)."""
    if table in VARIANTS:
        return VARIANTS[table].fold or None
    rules = COMBINED.get(table)
    return rules[0].data if rules else None
