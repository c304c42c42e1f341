"""leaderboards/sources/: ssl-transfer's tables checked as they load, and every source row in its one table."""

import csv
from collections import Counter
from pathlib import Path

import pytest

from leaderboards import published, ssl_transfer
from leaderboards.compiler import compile_leaderboard
from leaderboards.variants import VARIANTS

SOURCES = Path(published.__file__).with_name("sources")
TABLES = SOURCES / "ssl_transfer_tables.csv"
MODELS = {"InsDis", "MoCo-v1", "PCL-v1", "PIRL", "PCL-v2", "SimCLR-v1", "MoCo-v2", "SimCLR-v2", "SeLa-v2",
          "InfoMin", "BYOL", "DeepCluster-v2", "SwAV", "Supervised"}
MANY_SHOT = {"Aircraft": "mean_per_class_accuracy", "Caltech101": "mean_per_class_accuracy",
             "Cars": "top1_accuracy", "CIFAR10": "top1_accuracy", "CIFAR100": "top1_accuracy",
             "DTD": "top1_accuracy", "Flowers": "mean_per_class_accuracy", "Food": "top1_accuracy",
             "Pets": "mean_per_class_accuracy", "SUN397": "top1_accuracy", "VOC2007": "11pt_mAP"}
# The table each protocol's rows belong to, and the paper's table numbers they come from.
EXPECTED_TABLE = {"manyshot_linear": ("manyshot", {"1"}), "manyshot_finetune": ("finetune", {"1"}),
                  "fewshot_kornblith": ("fewshot_kornblith", {"2", "6", "7"}), "fewshot_cdfsl": ("cdfsl", {"3", "8"}),
                  "detection_voc_frozen": ("voc0712_det_r50fpn", {"4"}),
                  "detection_voc_finetune": ("voc0712_det_r50fpn", {"4"}),
                  "imagenet_linear_reported": ("imagenet_linear_ssl-transfer-quoted", {"1"})}


def read(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    return compile_leaderboard([], tmp_path_factory.mktemp("board"), plots=False)


def test_ssl_transfer_tables_are_complete_and_consistent():
    rows = read(TABLES)
    assert {r["model"] for r in rows} == MODELS
    keys = Counter(ssl_transfer.key_of(r) for r in rows)
    assert max(keys.values()) == 1  # one number per (protocol, model, dataset, shots, metric)
    per = Counter((r["table"], r["protocol"], r["shots"]) for r in rows)
    # Table 1: 11 datasets for linear and fine-tune, one ImageNet number, for each of the 14 models
    assert per[("Table 1", "manyshot_linear", "")] == per[("Table 1", "manyshot_finetune", "")] == 14 * 11
    assert per[("Table 1", "imagenet_linear_reported", "")] == 14
    for protocol in ("manyshot_linear", "manyshot_finetune"):
        for model in MODELS:
            got = {r["dataset"]: r["metric"] for r in rows if r["protocol"] == protocol and r["model"] == model}
            assert got == MANY_SHOT, (protocol, model)  # the paper's metric per dataset
    # few-shot: 20 shots in Tables 2 (Kornblith) and 3 (CD-FSL), 5 and 50 in 6, 7, 8; 50 shots skips the
    # datasets with too few images a class (Caltech101, Cars, Flowers)
    assert per[("Table 2", "fewshot_kornblith", "20")] == per[("Table 6", "fewshot_kornblith", "5")] == 14 * 10
    assert per[("Table 7", "fewshot_kornblith", "50")] == 14 * 7
    assert per[("Table 3", "fewshot_cdfsl", "20")] == per[("Table 8", "fewshot_cdfsl", "5")] == 14 * 4
    assert per[("Table 8", "fewshot_cdfsl", "50")] == 14 * 4
    assert per[("Table 4", "detection_voc_frozen", "")] == per[("Table 4", "detection_voc_finetune", "")] == 14 * 3
    for r in rows:
        assert 0 < float(r["value"]) <= 100, r
        assert bool(r["ci95"]) == r["protocol"].startswith("fewshot"), r  # the 95% intervals of few-shot
        if r["ci95"]:
            assert 0 < float(r["ci95"]) < 2, r
        assert r["source"] == f"Ericsson et al. CVPR 2021 (arXiv 2011.13377), {r['table']}"
    # an AP75 lies below AP50, and the 50-IoU AP above the averaged AP
    det = {(r["protocol"], r["model"], r["metric"]): float(r["value"]) for r in rows if "detection" in r["protocol"]}
    for (protocol, model, metric), value in det.items():
        if metric == "AP":
            assert det[(protocol, model, "AP75")] < det[(protocol, model, "AP50")] and value < det[
                (protocol, model, "AP50")]


def test_imagenet_column_matches_the_methods_own_readmes():
    """Table 1's ImageNet top-1 quotes each method's paper: where our reference list has the same model from its
    own repository (same epochs), the numbers agree."""
    quoted = {r["model"]: float(r["value"]) for r in read(TABLES) if r["protocol"] == "imagenet_linear_reported"}
    refs = {(r["method"], r["epochs"]): float(r["value"]) for r in read(SOURCES / "reference_results.csv")
            if r["benchmark"] == "imagenet_linear" and "README" in r["source"]}
    same = {"MoCo-v1": ("MoCo v1", "200"), "MoCo-v2": ("MoCo v2", "800"), "SimCLR-v2": ("SimCLRv2", ""),
            "DeepCluster-v2": ("DeepCluster-v2", "800"), "SwAV": ("SwAV", "800")}
    assert {m: quoted[m] for m in same} == {m: refs[k] for m, k in same.items()}


def test_the_readme_disagrees_only_where_known_and_the_paper_stands():
    readme = read(SOURCES / "ssl_transfer_readme.csv")
    paper = {ssl_transfer.key_of(r): r for r in read(TABLES)}
    differ = {(r["model"], r["dataset"]): (r["value"], paper[ssl_transfer.key_of(r)]["value"])
              for r in readme if (r["value"], r["ci95"]) != (paper[ssl_transfer.key_of(r)]["value"],
                                                              paper[ssl_transfer.key_of(r)]["ci95"])}
    assert differ == {("DeepCluster-v2", "CIFAR10"): ("94.07", "94.02"), ("Supervised", "CIFAR10"): ("91.47", "91.42")}
    rows = read(published.PUBLISHED_CSV)
    for model, value, readme_value in (("DeepCluster-v2", "94.02", "94.07"), ("Supervised", "91.42", "91.47")):
        (row,) = [r for r in rows if r["method"] == model and r["benchmark"] == "cifar10_manyshot"]
        assert row["value"] == value and f"states {readme_value}; the paper's number stands" in row["note"]
    assert sum("readme" in r["note"] for r in rows) == 2


def test_every_source_row_appears_once_in_the_table_of_its_variant(board):
    rows = read(TABLES)
    for r in rows:
        table, numbers = EXPECTED_TABLE[r["protocol"]]
        benchmark, variant = ssl_transfer.PROTOCOLS[r["protocol"]]
        places = published.places_of({"benchmark": benchmark.format(ds=ssl_transfer.dataset_key(r["dataset"])),
                                      "metric": ssl_transfer.metric_of(r), "protocol": variant, "source": ""})
        assert [t for t, _ in places] == [table], r
        frame = board.tables[table]
        column = places[0][1]
        hits = frame[(frame["model"] == r["model"]) & (frame["kind"] == "published") & frame[column].notna()]
        assert len(hits) == 1, r  # once, in one row
        assert hits[column].iloc[0] == float(r["value"])
        if r["ci95"]:
            assert hits[f"{column}_ci95"].iloc[0] == float(r["ci95"])
        source = hits["source"].iloc[0]
        assert source.startswith("Ericsson et al. CVPR 2021 (arXiv 2011.13377), Table")
        assert r["table"].split()[1] in source.split("Table")[1]
    # no published row of another variant shares a table with them; our rows only where they reproduce it
    for table, _ in EXPECTED_TABLE.values():
        frame = board.tables[table]
        variants = {ssl_transfer.PROTOCOLS[p][1] for p, (t, _) in EXPECTED_TABLE.items() if t == table}
        assert len(variants) == 1 and set(frame["protocol"]) == variants, table
        assert not VARIANTS[variants.pop()].separate or table.endswith("quoted")
    # and every transcribed number is in published.csv once, with the paper as its source
    merged = [r for r in read(published.PUBLISHED_CSV) if "2011.13377" in r["source"]]
    assert len(merged) == len(rows)


def test_a_bad_transcription_stops_the_refresh_saying_which_row(tmp_path):
    from hexa_zoo.errors import DataError

    header = ",".join(ssl_transfer.TRANSCRIPTION_COLUMNS) + "\n"
    row = 'Table 1,manyshot_linear,BYOL,CIFAR10,,top1_accuracy,93.26,,"Ericsson et al. CVPR 2021, Table 1"\n'
    bad = tmp_path / "t.csv"
    bad.write_text(header + row + row)
    with pytest.raises(DataError, match="transcribed twice"):
        published.refresh_published(tmp_path / "p.csv", sources=[bad])
    bad.write_text(header + row + row.replace("Table 1,", "readme,").replace("BYOL", "SwAV"))
    with pytest.raises(DataError, match="matches no number of the paper") as err:
        published.refresh_published(tmp_path / "p.csv", sources=[bad])
    assert str(bad) in str(err.value)
    bad.write_text(header + row.replace("manyshot_linear", "segmentation"))
    with pytest.raises(DataError, match="unknown ssl-transfer protocol 'segmentation'") as err:
        published.refresh_published(tmp_path / "p.csv", sources=[bad])
    assert "ssl_transfer.py" in err.value.fix
    bad.write_text(header + row.replace("93.26", "n/a"))
    with pytest.raises(DataError, match="value 'n/a' is not a number"):
        published.refresh_published(tmp_path / "p.csv", sources=[bad])
