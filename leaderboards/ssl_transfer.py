"""ssl-transfer's tables (Ericsson, Gouk, Hospedales, CVPR 2021, arXiv 2011.13377) as published rows.

`sources/ssl_transfer_tables.csv` is the paper's numbers as transcribed, one row per number in the paper's
own terms (table, protocol, model, dataset, shots, metric, value, ci95, source). `sources/ssl_transfer_readme.csv`
holds, in the same shape with table `readme`, the numbers the repository's readme.md states for its example
commands. `published_rows` turns the transcription into rows of `published.csv` in the names our records use
(benchmark `<dataset>_manyshot`, metric `mean_per_class`, ...), so a record of ours lands in the same column.
Where the readme states another number than the paper, the paper's stands and the row's note gives the readme's.
"""

from __future__ import annotations

from hexa_zoo.errors import DataError

TRANSCRIPTION_COLUMNS = ("table", "protocol", "model", "dataset", "shots", "metric", "value", "ci95", "source")

# The paper's protocol -> (our benchmark with {ds} for the dataset key, our protocol variant).
PROTOCOLS = {
    "manyshot_linear": ("{ds}_manyshot", "ssl-transfer-linear"),
    "manyshot_finetune": ("{ds}_finetune", "ssl-transfer-finetune"),
    "fewshot_kornblith": ("{ds}_fewshot_kornblith", "ssl-transfer-fewshot"),
    "fewshot_cdfsl": ("{ds}_cdfsl", "ssl-transfer-fewshot"),
    "detection_voc_frozen": ("voc0712_det_r50fpn_frozen", "ssl-transfer-detection"),
    "detection_voc_finetune": ("voc0712_det_r50fpn_finetune", "ssl-transfer-detection"),
    "imagenet_linear_reported": ("imagenet_linear", "ssl-transfer-quoted"),
}
# The paper's metric names -> the names our protocols write (transfer/readers/manyshot.py, transfer/protocols/fewshot.py).
METRICS = {"top1_accuracy": "top1", "mean_per_class_accuracy": "mean_per_class", "11pt_mAP": "mAP",
           "AP": "AP", "AP50": "AP50", "AP75": "AP75"}
# Pre-training epochs as the readme's weight files name them (moco_v2_800ep_pretrain.pth.tar, ...); the
# others' files do not say.
EPOCHS = {"MoCo-v1": "200", "PCL-v1": "200", "PCL-v2": "200", "MoCo-v2": "800", "SeLa-v2": "400",
          "InfoMin": "800", "DeepCluster-v2": "800", "SwAV": "800"}
ARCH = "resnet50"  # all 14 models


def dataset_key(dataset: str) -> str:
    """The paper's dataset name as our readers name it: CIFAR10 -> cifar10, VOC2007 -> voc2007."""
    return dataset.lower().replace("-", "")


def metric_of(row: dict[str, str]) -> str:
    """Our metric name: few-shot accuracy per shots (`acc_5w20s_centroid`), the rest renamed."""
    if row["metric"] == "accuracy" and row["shots"]:
        return f"acc_5w{int(row['shots'])}s_centroid"
    if row["metric"] not in METRICS:
        raise DataError(f"ssl-transfer transcription: unknown metric {row['metric']!r}",
                        f"use one of {sorted(METRICS)} or accuracy with shots")
    return METRICS[row["metric"]]


def key_of(row: dict[str, str]) -> tuple[str, str, str, str, str]:
    """What a number is of: (protocol, model, dataset, shots, metric)."""
    return row["protocol"], row["model"], row["dataset"], row["shots"], row["metric"]


def published_rows(rows: list[dict[str, str]], where: str) -> list[dict[str, str]]:
    """Published rows for the paper's numbers in `rows` (in order); a `readme` row that disagrees with the
    paper's number becomes that row's note."""
    paper = [r for r in rows if r["table"] != "readme"]
    by_key: dict[tuple, dict[str, str]] = {}
    for r in paper:
        if r["protocol"] not in PROTOCOLS:
            raise DataError(f"{where}: unknown ssl-transfer protocol {r['protocol']!r}",
                            f"name it in leaderboards/ssl_transfer.py PROTOCOLS ({', '.join(PROTOCOLS)})")
        if key_of(r) in by_key:
            raise DataError(f"{where}: {key_of(r)} is transcribed twice", "keep one row per number")
        by_key[key_of(r)] = r
    notes: dict[tuple, str] = {}
    for r in rows:
        if r["table"] != "readme":
            continue
        if key_of(r) not in by_key:
            raise DataError(f"{where}: the readme's {key_of(r)} matches no number of the paper's tables",
                            "check its protocol, model, dataset, shots and metric against ssl_transfer_tables.csv")
        p = by_key[key_of(r)]
        if float(r["value"]) != float(p["value"]) or (r["ci95"] or "") != (p["ci95"] or ""):
            quoted = f"{r['value']} ± {r['ci95']}" if r["ci95"] else r["value"]
            notes[key_of(r)] = (f"{r['dataset']}: {r['source'].split(':')[0]} states {quoted}; "
                                "the paper's number stands")
    out = []
    for r in paper:
        benchmark, protocol = PROTOCOLS[r["protocol"]]
        out.append({"method": r["model"], "arch": ARCH, "epochs": EPOCHS.get(r["model"], ""),
                    "benchmark": benchmark.format(ds=dataset_key(r["dataset"])), "metric": metric_of(r),
                    "value": r["value"], "source": r["source"], "note": notes.get(key_of(r), ""),
                    "ci95": r["ci95"] or "", "protocol": protocol})
    return out
