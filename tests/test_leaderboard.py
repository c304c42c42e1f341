"""`hexa leaderboard`: aggregation over seeds, skipped files, concurrent writers, published rows, determinism."""

import csv
import hashlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hexa_zoo import records
from leaderboards import cli, published
from leaderboards.compiler import compile_leaderboard
from leaderboards.variants import VARIANTS
from hexa_zoo.errors import DataError

REPO = Path(__file__).resolve().parent.parent
PUBLISHED = REPO / "leaderboards" / "published.csv"


def write(results, model, benchmark, metrics, *, seed=0, dataset="embedded", preset="embedded",
          created=None, source=None, config=None, protocol=None):
    rec = records.make_record(
        protocol=protocol or benchmark.split("_", 1)[1], benchmark=benchmark, preset=preset,
        dataset={"name": dataset, "path": f"/data/{dataset}", "fingerprint": fingerprint(dataset)},
        model={"name": model, "weights_sha256": f"{model}-sha", "source": source},
        metrics={k: records.metric(v) for k, v in metrics.items()}, config=config or {"k": [20, 200], "seed": seed},
        seed=seed)
    if created:
        rec["created"] = created
    return records.write_record(results, rec)


def fingerprint(dataset):
    return "sha256:" + hashlib.sha256(dataset.encode()).hexdigest()


def read_table(out, table):
    with open(out / "tables" / f"{table}.csv", newline="") as f:
        return list(csv.DictReader(f))


def row_of(rows, model):
    (row,) = [r for r in rows if r["model"] == model]
    return row


def make_zoo_folder(model, sha=None):
    """A zoo folder as hexa_zoo.publish writes it: config.json, and the recipe as YAML in the model card."""
    folder = Path(os.environ["HEXA_ZOO_HOME"]) / model
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architecture": "resnet18", "hexa_zoo": {
        "tag": "embedded", "weights_sha256": sha or f"{model}-sha"}}))
    recipe = "arch: resnet18\nepochs: 3\nmethod: hexa_moco\n"
    (folder / "README.md").write_text(f"# card\n\n## Recipe\n\n```yaml\n{recipe}```\n")
    return folder


@pytest.fixture
def results(tmp_path):
    """Three seeds of a HEXA model and its baseline on embedded kNN, one low-shot run, one rerun seed."""
    d = tmp_path / "results"
    rng = np.random.default_rng(0)
    hexa_folder = make_zoo_folder("hexa_moco_r18.embedded")
    values = {}
    for model in ("hexa_moco_r18.embedded", "moco_v2_r18.embedded"):
        values[model] = rng.uniform(40, 80, size=3)
        for seed, v in enumerate(values[model]):
            write(d, model, "embedded_knn", {"top1@20": [v], "top1@200": [v - 1]}, seed=seed,
                  created=f"2026-01-01T00:00:0{seed}Z", source=str(hexa_folder) if "hexa" in model else None)
    # seed 1 of the baseline was rerun later: the newer record replaces the older, n stays 3
    values["moco_v2_r18.embedded"][1] = 55.5
    write(d, "moco_v2_r18.embedded", "embedded_knn", {"top1@20": [55.5], "top1@200": [54.5]}, seed=1,
          created="2026-01-02T00:00:00Z")
    lowshot = {"hexa_moco_r18.embedded": rng.uniform(20, 60, size=(2, 5)),
               "moco_v2_r18.embedded": rng.uniform(20, 60, size=(2, 5))}
    for model, samples in lowshot.items():
        write(d, model, "embedded_lowshot_svm", {"mAP@k1": samples[0], "mAP@k2": samples[1], "mAP@full": [70.0]})
    # few-shot reports a 95% confidence interval over its episodes: shown instead of the std
    episodes = rng.uniform(0, 100, size=50)
    m = records.metric(episodes)
    m["ci95"] = 1.96 * np.std(episodes, ddof=1) / np.sqrt(50)
    rec = records.make_record(protocol="fewshot", benchmark="embedded_fewshot", preset="embedded",
                              dataset={"name": "embedded", "fingerprint": fingerprint("heldout")},
                              model={"name": "moco_v2_r18.embedded", "weights_sha256": "x"},
                              metrics={"acc_5w1s_logreg": m}, config={}, seed=0)
    records.write_record(d, rec)
    return d, values, lowshot


def test_seeds_aggregate_to_mean_std_and_n(results, tmp_path):
    d, values, lowshot = results
    out = tmp_path / "board"
    compiled = compile_leaderboard([d], out, published=PUBLISHED)
    assert compiled.n_records == 10 and not compiled.skipped

    knn = read_table(out, "embedded_knn")
    readme = (out / "README.md").read_text()
    for model, vals in values.items():
        row = row_of(knn, model)
        assert row["kind"] == "ours" and row["n_over"] == "seeds"
        assert float(row["top1@20"]) == pytest.approx(np.mean(vals), abs=1e-4)
        assert float(row["top1@20_std"]) == pytest.approx(np.std(vals, ddof=1), abs=1e-4)
        assert float(row["top1@20_n"]) == 3
        assert f"{np.mean(vals):.2f} ± {np.std(vals, ddof=1):.2f} (3 seeds)" in readme
        # every link of the row points at a real record
        for link in row["records"].split(";"):
            assert records.read_records([(out / link).parent])[0]
        assert len(row["records"].split(";")) == 3

    # one seed: the run's own spread over its 5 samples, and said so
    svm = read_table(out, "embedded_lowshot_svm")
    for model, samples in lowshot.items():
        row = row_of(svm, model)
        assert row["n_over"] == "samples" and float(row["mAP@k1_n"]) == 5
        assert float(row["mAP@k2_std"]) == pytest.approx(np.std(samples[1], ddof=1), abs=1e-4)
    assert "70.00 (1 run)" in readme
    fewshot = row_of(read_table(out, "embedded_fewshot"), "moco_v2_r18.embedded")
    ci95 = float(fewshot["acc_5w1s_logreg_ci95"])
    assert f"{float(fewshot['acc_5w1s_logreg']):.2f} ± {ci95:.2f} (95% CI, 50 samples)" in readme

    # the HEXA row links the model card of its weights (found by sha256); the baseline's card is gone
    line = next(l for l in readme.splitlines() if "**hexa_moco_r18.embedded**" in l and "embedded_knn" not in l
                and "[card]" in l)
    card = re.search(r"\[card\]\(([^)]+)\)", line)[1]
    assert (out / card).read_text().startswith("# card")
    assert row_of(knn, "hexa_moco_r18.embedded")["card"] == card
    line = next(l for l in readme.splitlines() if l.startswith("| **moco_v2_r18.embedded**"))
    assert "card gone (no zoo folder holds weights moco_v2_" in line and "[card]" not in line
    assert row_of(knn, "hexa_moco_r18.embedded")["epochs"] == "3"  # read from the card's recipe
    # embedded tables sit in their own part, with the line that says what they were measured on
    assert readme.index("## Embedded dataset") < readme.index("`embedded_knn`")
    assert "never with the ImageNet-scale tables" in readme
    assert {"hexa_vs_baseline.png", "lowshot_embedded_lowshot_svm.png",
            "lowshot_voc07_lowshot_svm_pcl.png"} <= {p.name for p in (out / "plots").iterdir()}


def test_one_name_with_two_weights_gives_two_labelled_rows(tmp_path):
    d = tmp_path / "results"
    make_zoo_folder("moco_v2_r18.embedded", sha="bbbbbbbb22")  # the zoo now holds the second weights
    for sha, value in (("aaaaaaaa11", 30.0), ("bbbbbbbb22", 35.0)):
        rec = records.make_record(protocol="knn", benchmark="embedded_knn", preset="embedded",
                                  dataset={"name": "embedded", "fingerprint": fingerprint("embedded")},
                                  model={"name": "moco_v2_r18.embedded", "weights_sha256": sha},
                                  metrics={"top1@20": records.metric(value)}, config={}, seed=0)
        records.write_record(d, rec)
    readme = compile_leaderboard([d], tmp_path / "b", published=PUBLISHED, plots=False).readme.read_text()
    lines = {}
    for sha, value in (("aaaaaaaa", "30.00"), ("bbbbbbbb", "35.00")):
        pattern = rf"^\| \*\*moco_v2_r18\.embedded\*\* \(weights {sha}\) \|.*?\| {value} \(1 run\).*$"
        lines[sha] = re.search(pattern, readme, flags=re.M)[0]
    # only the row of the weights the zoo folder holds links that folder's card; the other says its card is gone
    assert "[card]" in lines["bbbbbbbb"] and "[card]" not in lines["aaaaaaaa"]
    assert "card gone (no zoo folder holds weights aaaaaaaa)" in lines["aaaaaaaa"]
    # the card is found by the weights, whatever the folder is called (published under another name)
    os.rename(Path(os.environ["HEXA_ZOO_HOME"]) / "moco_v2_r18.embedded", Path(os.environ["HEXA_ZOO_HOME"]) / "x.y")
    table = compile_leaderboard([d], tmp_path / "b", published=PUBLISHED, plots=False).tables["embedded_knn"]
    assert [Path(c).parent.name if c else "" for c in table["card"]] == ["", "x.y"]


def test_embedded_records_never_join_an_imagenet_table(tmp_path):
    d = tmp_path / "results"
    write(d, "hexa_moco_r18.embedded", "imagenet_linear", {"top1": [33.0]}, dataset="embedded")
    write(d, "hexa_moco_r50.in1k", "imagenet_linear", {"top1": [70.25]}, dataset="imagenet", preset="paper")
    write(d, "hexa_moco_r50.in1k", "imagenet_linear", {"top1": [60.0]}, dataset="imagenet", preset="fast")
    compiled = compile_leaderboard([d], tmp_path / "board", published=PUBLISHED, plots=False)
    imagenet = compiled.tables["imagenet_linear"]
    assert list(imagenet[imagenet["kind"] == "ours"]["model"]) == ["hexa_moco_r50.in1k"]
    assert list(compiled.tables["embedded_imagenet_linear"]["model"]) == ["hexa_moco_r18.embedded"]
    assert list(compiled.tables["imagenet_linear_fast_preset"]["model"]) == ["hexa_moco_r50.in1k"]
    readme = compiled.readme.read_text()
    assert f"measured here on `imagenet ({fingerprint('imagenet')[7:15]})` with preset `paper`" in readme


def test_corrupt_and_foreign_files_are_reported_and_skipped(results, tmp_path, capsys):
    d, _, _ = results
    (d / "broken.json").write_text('{"schema": "hexa-result/1", "protoc')
    (d / "sub").mkdir()
    (d / "sub" / "foreign.json").write_text(json.dumps({"loss": [1, 2, 3]}))
    bad_metric = json.loads(next(d.glob("knn-*.json")).read_text())
    bad_metric["metrics"] = {"top1@20": {"mean": "high"}}
    (d / "bad_metric.json").write_text(json.dumps(bad_metric))
    out = tmp_path / "board"
    assert cli.main(["--results", str(d), "--out", str(out), "--published", str(PUBLISHED),
                             "--no-plots"]) == 0
    printed = capsys.readouterr().out
    readme = (out / "README.md").read_text()
    footer = readme[readme.index("## Skipped files"):]
    for name, why in (("broken.json", "not valid JSON"), ("sub/foreign.json", "not a hexa-result/1 record"),
                      ("bad_metric.json", "has no finite mean")):
        assert f"`../results/{name}`" in footer and why in footer
        assert str(d / name) in printed
    assert row_of(read_table(out, "embedded_knn"), "hexa_moco_r18.embedded")["top1@20_n"] == "3"


def _writer(args):
    results, worker = args
    for i in range(20):
        write(results, "moco_v2_r18.embedded", "embedded_knn", {"top1@20": [float(worker * 100 + i)]},
              seed=worker * 100 + i)


def test_concurrent_writers_lose_nothing(tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_writer, [(d, 0), (d, 1)])
    got, skipped = records.read_records([d])
    assert len(got) == 40 and not skipped
    compiled = compile_leaderboard([d], tmp_path / "board", published=PUBLISHED, plots=False)
    row = row_of(read_table(compiled.out, "embedded_knn"), "moco_v2_r18.embedded")
    expected = [w * 100 + i for w in (0, 1) for i in range(20)]
    assert float(row["top1@20_n"]) == 40
    assert float(row["top1@20"]) == pytest.approx(np.mean(expected), abs=1e-4)


def test_every_published_number_appears_with_its_source(tmp_path):
    compiled = compile_leaderboard([], tmp_path / "board", published=PUBLISHED, plots=False)
    readme = compiled.readme.read_text()
    with open(PUBLISHED, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 65
    for row in rows:
        assert row["protocol"] in VARIANTS, row
        for table, metric in published.places_of(row):
            section = readme[readme.index(f"`{table}`"):]
            section = section[:section.index("CSV:")]
            header = next(l for l in section.splitlines() if l.startswith("| Model"))
            col = [c.strip() for c in header.strip("|").split("|")].index(metric)
            shown = f"{row['value']} ± {row['ci95']}" if row["ci95"] else row["value"]
            matches = [l for l in section.splitlines()
                       if l.startswith(f"| {row['method']}") and published._paper_of(row["source"]) in l
                       and all(part in l for part in row["note"].split("; "))
                       and f"| {row['protocol']} |" in l
                       and [c.strip() for c in l.strip("|").split("|")][col] == shown]
            assert matches, f"{row} is missing from the README"
            assert all(("†" in l) == (row["verified"] == "no") for l in matches)
    assert {r["verified"] for r in rows if r["method"].startswith("HEXA")} == {"no"}
    assert {r["verified"] for r in rows if not r["method"].startswith("HEXA")} == {"yes"}


def test_refresh_published_rebuilds_the_committed_file(tmp_path):
    """The committed published.csv is exactly what a refresh builds from leaderboards/sources/ (no path outside)."""
    assert published.refresh_published(tmp_path / "p.csv").read_bytes() == PUBLISHED.read_bytes()
    src = tmp_path / "refs.csv"
    src.write_text("method,arch,epochs,benchmark,metric,value,source,note\n"
                   "X,resnet50,100,imagenet_linear,top1,70.1,facebookresearch/moco README,\n"
                   "Y,resnet50,,imagenet_linear,top1,71.0,HEXA paper as indexed by a results aggregator,"
                   "numbers not verified\n")
    extra = tmp_path / "extra.csv"
    extra.write_text("method,arch,epochs,benchmark,metric,value,ci95,source,note,protocol\n"
                     "Z,resnet50,800,eurosat_cdfsl,acc_5w5s_centroid,80.5,0.5,a readme,,ssl-transfer-fewshot\n")
    published.refresh_published(tmp_path / "p2.csv", sources=[src, extra])
    with open(tmp_path / "p2.csv", newline="") as f:
        got = [(r["method"], r["protocol"], r["ci95"], r["verified"]) for r in csv.DictReader(f)]
    assert got == [("X", "moco-lincls", "", "yes"), ("Y", "hexa-paper", "", "no"),
                   ("Z", "ssl-transfer-fewshot", "0.5", "yes")]
    # a source whose protocol is not named anywhere stops the refresh, saying where to name it
    src.write_text("method,arch,epochs,benchmark,metric,value,source,note\nX,resnet50,,imagenet_linear,top1,70,"
                   "some blog,\n")
    with pytest.raises(DataError, match="no known protocol variant") as err:
        published.refresh_published(tmp_path / "p3.csv", sources=[src])
    assert "variants.py" in err.value.fix
    src.write_text("method,value\nX,abc\n")
    with pytest.raises(DataError, match="lacks the column"):
        published.refresh_published(tmp_path / "p3.csv", sources=[src])
    with pytest.raises(DataError, match="do not exist") as err:  # the message names files a clone has
        published.refresh_published(tmp_path / "p3.csv", sources=[tmp_path / "nowhere.csv"])
    assert "shared" not in str(err.value) and "leaderboards/sources" in err.value.fix


def test_pcl_low_shot_rows_no_longer_sit_beside_ours(tmp_path):
    """VOC07 low-shot: our VISSL-protocol record and PCL's rows (another protocol) land in different tables."""
    d = tmp_path / "results"
    write(d, "moco_v2_r50.in1k_ep800", "voc07_lowshot_svm", {"mAP@k1": [40.0] * 5, "mAP@k16": [70.0] * 5},
          dataset="voc07", preset="paper", protocol="lowshot-svm")
    write(d, "moco_v2_r50.in1k_ep800", "voc07_lowshot_svm", {"mAP@k1": [38.0] * 5}, dataset="voc07",
          preset="paper_gap", protocol="lowshot-svm")
    compiled = compile_leaderboard([d], tmp_path / "board", published=PUBLISHED, plots=False)
    main = compiled.tables["voc07_lowshot_svm"]
    assert list(main["model"]) == ["moco_v2_r50.in1k_ep800"] and list(main["protocol"]) == ["vissl"]
    pcl = compiled.tables["voc07_lowshot_svm_pcl"]
    assert set(pcl["model"]) == {"PCL v1", "PCL v2"} and set(pcl["kind"]) == {"published"}
    assert set(pcl["protocol"]) == {"pcl"}
    assert float(pcl[pcl["model"] == "PCL v1"]["mAP@k16"].iloc[0]) == 74.3
    # our earlier GAP features are a preset of ours: a table of their own, beside neither
    assert list(compiled.tables["voc07_lowshot_svm_paper_gap_preset"]["model"]) == ["moco_v2_r50.in1k_ep800"]
    readme = compiled.readme.read_text()
    section = readme[readme.index("`voc07_lowshot_svm_pcl`"):]
    assert "A table of its own: PCL's training sets" in section[:section.index("CSV:")]
    section = readme[readme.index("`voc07_lowshot_svm`"):]
    assert "PCL" not in section[:section.index("CSV:")]
    # no table mixes a separate variant's rows with another variant's
    for table, frame in compiled.tables.items():
        variants = set(frame["protocol"])
        assert len(variants) == 1 or not any(v in VARIANTS and VARIANTS[v].separate for v in variants), table


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_recompiling_gives_byte_identical_output(results, tmp_path):
    d, _, _ = results
    runs = tmp_path / "runs" / "hexa_moco"
    runs.mkdir(parents=True)
    steps = np.arange(40)
    lines = ["step,epoch,loss,loss_clean,loss_adv,loss_cutmix,lr,img_per_s"]
    lines += [f"{s},{s // 10},{5 - s / 20:.4f},{4 - s / 20:.4f},{4.5 - s / 25:.4f},{4.8 - s / 30:.4f},0.03,100"
              for s in steps]
    (runs / "log.csv").write_text("\n".join(lines) + "\n")
    (runs / "config.yaml").write_text("method: hexa_moco\narch: resnet18\n")
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "log.csv").write_text("epoch\n1\n")  # no loss column: skipped with a warning
    out = tmp_path / "board"
    first = compile_leaderboard([d], out, published=PUBLISHED, runs=[tmp_path / "runs"])
    assert (out / "plots" / "pretrain_curves.png").is_file()
    before = _snapshot(out)
    # again, from a fresh process through the command line: same bytes, PNGs included
    subprocess.run([sys.executable, "-m", "hexa_zoo", "leaderboard", "--results", str(d), "--out", str(out),
                    "--published", str(PUBLISHED), "--runs", str(tmp_path / "runs")], check=True, capture_output=True)
    assert _snapshot(out) == before
    assert {p.suffix for p in first.written} == {".csv", ".png", ".md", ".html"}
    page = before["site/index.html"]
    assert page.count(b"<svg") == 4 and b"<dc:date>" not in page and b"Matplotlib v" not in page  # plots inline
    assert b"http://" not in page.replace(b'xmlns="http://www.w3.org/2000/svg"', b"").replace(
        b'xmlns:xlink="http://www.w3.org/1999/xlink"', b"")  # nothing fetched: sources link out with https
    for name, data in before.items():
        if name.endswith(".png"):
            assert b"tEXt" not in data and b"matplotlib" not in data.lower(), name
        else:
            assert not re.search(rb"20\d\d-\d\d-\d\dT", data), name  # no timestamps in tables


def test_cli_help_missing_folder_and_light_import(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "hexa leaderboard --results" in capsys.readouterr().out
    with pytest.raises(DataError, match="does not exist"):
        cli.main(["--results", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    code = "import sys, leaderboards.cli; assert not {'pandas', 'matplotlib'} & set(sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_published_references_come_with_the_package_outside_a_checkout(tmp_path):
    """published.csv is package data of `leaderboards`: found beside the package wherever it is installed."""
    found = published.find_published(tmp_path / "out", None)
    assert found == Path(published.__file__).with_name("published.csv")
    repo_copy = Path(__file__).resolve().parents[1] / "leaderboards" / "published.csv"
    assert found.read_bytes() == repo_copy.read_bytes()


def _record(d, benchmark, protocol, preset, metrics, *, dataset, config=None, model="moco_v2_r50.in1k_ep800", seed=0):
    rec = records.make_record(protocol=protocol, benchmark=benchmark, preset=preset,
                              dataset={"name": dataset, "fingerprint": fingerprint(benchmark)},
                              model={"name": model, "weights_sha256": f"{model}-sha"}, metrics=metrics,
                              config=config or {}, seed=seed)
    return records.write_record(d, rec)


def test_transfer_tables_fold_datasets_and_sit_beside_ssl_transfer(tmp_path):
    """Fixture records of every new protocol, as the protocols name them, compiled into the new tables."""
    d = tmp_path / "results"
    cfg = {"resize": 224, "crop": 224, "wd_values": 45}
    for seed, value in ((0, 90.0), (1, 91.0)):  # CIFAR-10 with two seeds, DTD with one
        _record(d, "cifar10_manyshot", "manyshot", "paper", {"top1": records.metric(value)}, dataset="cifar10",
                config={**cfg, "dataset": "cifar10"}, seed=seed)
    _record(d, "dtd_manyshot", "manyshot", "paper", {"top1": records.metric(70.0)}, dataset="dtd",
            config={**cfg, "dataset": "dtd"})
    _record(d, "voc2007_manyshot", "manyshot", "paper", {"mAP": records.metric(80.0)}, dataset="voc2007",
            config={**cfg, "dataset": "voc2007", "wd_values": 5})  # another sweep: another row
    _record(d, "cifar10_finetune", "finetune", "paper", {"top1": records.metric(95.5)}, dataset="cifar10",
            config={"dataset": "cifar10", "steps": 5000})
    episodes = np.random.default_rng(0).uniform(60, 90, size=600)
    acc = records.metric(episodes)
    acc["ci95"] = 1.96 * np.std(episodes) / np.sqrt(600)
    _record(d, "eurosat_cdfsl", "fewshot", "cdfsl", {"acc_5w5s_centroid": acc}, dataset="EuroSAT")
    _record(d, "chestx_cdfsl", "fewshot", "cdfsl", {"acc_5w50s_centroid": records.metric([30.0, 34.0])},
            dataset="ChestX")
    head = {"head": "results/linear-x.json"}
    for name, top1 in (("imagenet_v2", 58.0), ("imagenet_r", 30.5), ("imagenet_a", 2.5), ("imagenet_sketch", 20.0)):
        _record(d, name, "robustness", "paper", {"top1": records.metric(top1)}, dataset=name,
                config={**head, "dataset": name.replace("_", "-")})
    _record(d, "imagenet_c", "robustness", "paper", {k: records.metric(v) for k, v in (
        ("mCE", 75.25), ("error_contrast", 60.0), ("CE_contrast", 70.0))}, dataset="imagenet-c",
        config={**head, "dataset": "imagenet-c"})
    _record(d, "imagenet_adversarial", "adversarial", "paper", {k: records.metric(v) for k, v in (
        ("top1_clean", 67.5), ("top1_pgd_eps1", 20.0), ("top1_pgd_eps2", 5.0), ("top1_pgd_eps4", 0.5))},
        dataset="imagenet")
    # the embedded suite's records of the same protocols: embedded tables, no published row beside them
    for bench, protocol, preset, metric in (("embedded_manyshot", "manyshot", "embedded", "top1"),
                                            ("embedded_cdfsl", "fewshot", "cdfsl_embedded", "acc_5w5s_centroid"),
                                            ("embedded_adversarial", "adversarial", "embedded", "top1_pgd_eps4"),
                                            ("embedded_robustness_c", "robustness", "embedded", "mean_error")):
        _record(d, bench, protocol, preset, {metric: records.metric(12.5)}, dataset="embedded",
                model="hexa_moco_r18.embedded")
    compiled = compile_leaderboard([d], tmp_path / "board", published=PUBLISHED, plots=False)
    out, t = compiled.out, compiled.tables
    readme = compiled.readme.read_text()

    many = read_table(out, "manyshot")
    ours = [r for r in many if r["kind"] == "ours"]
    assert len(ours) == 2  # the 45-value sweep on CIFAR-10 and DTD folds into one row; the 5-value one apart
    row = next(r for r in ours if r["cifar10 top1"])
    assert float(row["cifar10 top1"]) == 90.5 and float(row["cifar10 top1_n"]) == 2 and float(row["dtd top1"]) == 70.0
    assert len(row["records"].split(";")) == 3 and row["protocol"] == "ssl-transfer-linear"
    assert float(row_of(many, "DeepCluster-v2")["cifar10 top1"]) == 94.02  # the paper's Table 1 (readme: 94.07)
    assert float(row_of(many, "Supervised")["cifar10 top1"]) == 91.42
    assert "90.50 ± 0.71 (2 seeds)" in readme and "70.00 (1 run)" in readme
    assert float(row_of(read_table(out, "finetune"), "DeepCluster-v2")["cifar10 top1"]) == 97.06
    assert float(row_of(read_table(out, "finetune"), "moco_v2_r50.in1k_ep800")["cifar10 top1"]) == 95.5

    cdfsl = read_table(out, "cdfsl")
    ours = row_of(cdfsl, "moco_v2_r50.in1k_ep800")
    assert float(ours["eurosat acc_5w5s_centroid"]) == pytest.approx(np.mean(episodes), abs=1e-4)
    assert float(ours["eurosat acc_5w5s_centroid_ci95"]) == pytest.approx(1.96 * np.std(episodes) / np.sqrt(600),
                                                                           abs=1e-4)
    assert float(ours["chestx acc_5w50s_centroid"]) == 32.0
    assert float(row_of(cdfsl, "DeepCluster-v2")["eurosat acc_5w5s_centroid_ci95"]) == 0.49
    section = readme[readme.index("`cdfsl`"):]
    section = section[:section.index("CSV:")]
    assert "| 88.39 ± 0.49 |" in section and "| 32.34 ± 0.45 |" in section
    assert f"{np.mean(episodes):.2f} ± {1.96 * np.std(episodes) / np.sqrt(600):.2f} (95% CI, 600 samples)" in section

    rob = t["imagenet_robustness"]
    assert list(compiled.metrics["imagenet_robustness"]) == ["imagenet_a top1", "imagenet_c mCE", "imagenet_r top1",
                                                             "imagenet_sketch top1", "imagenet_v2 top1"]
    (r,) = rob.to_dict("records")
    assert (r["imagenet_v2 top1"], r["imagenet_r top1"], r["imagenet_a top1"], r["imagenet_sketch top1"],
            r["imagenet_c mCE"]) == (58.0, 30.5, 2.5, 20.0, 75.25)
    assert set(compiled.metrics["imagenet_c"]) == {"mCE", "error_contrast", "CE_contrast"}  # its own table too
    adv = t["imagenet_adversarial"]
    assert compiled.metrics["imagenet_adversarial"] == ["top1_clean", "top1_pgd_eps1", "top1_pgd_eps2", "top1_pgd_eps4"]
    assert [adv[m].iloc[0] for m in compiled.metrics["imagenet_adversarial"]] == [67.5, 20.0, 5.0, 0.5]
    assert "Adversarial robustness of the linear probe" in readme and "Robustness: ImageNet-V2/R/A/Sketch" in readme

    for table in ("embedded_manyshot", "embedded_cdfsl", "embedded_adversarial", "embedded_robustness_c"):
        assert list(t[table]["kind"]) == ["ours"] and list(t[table]["model"]) == ["hexa_moco_r18.embedded"], table
    assert readme.index("## Embedded dataset") < readme.index("`embedded_cdfsl`")


def test_update_cards_writes_the_hub_model_index_from_the_records_of_those_weights(tmp_path, capsys):
    import timm
    from huggingface_hub import ModelCard

    from hexa_zoo.fileio import sha256_file
    from hexa_zoo.publish import publish, recipe_of

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    folder = publish(timm.create_model("resnet18", num_classes=0).state_dict(), "moco_v2_r18.embedded",
                     card={"recipe": {"method": "moco_v2", "arch": "resnet18", "epochs": 3}})
    weights = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    d = tmp_path / "results"

    def record(model, sha, benchmark, protocol, preset, metrics, dataset="embedded", seed=0):
        rec = records.make_record(protocol=protocol, benchmark=benchmark, preset=preset,
                                  dataset={"name": dataset, "fingerprint": fingerprint(dataset)},
                                  model={"name": model, "weights_sha256": sha},
                                  metrics={k: records.metric(v) for k, v in metrics.items()}, config={}, seed=seed)
        return records.write_record(d, rec)

    knn = record("moco_v2_r18.embedded", weights, "embedded_knn", "knn", "embedded", {"top1@20": [41.5]})
    det = record("renamed.later", weights, "voc0712_det_r50c4", "detection", "paper", {"AP50": [80.25], "AP": [55.0]},
                 dataset="voc0712")
    record("moco_v2_r18.embedded", "other-weights", "embedded_knn", "knn", "embedded", {"top1@20": [10.0]}, seed=1)
    out = tmp_path / "board"
    cli.main(["--results", str(d), "--out", str(out), "--published", str(PUBLISHED), "--no-plots", "--update-cards"])
    printed = capsys.readouterr().out
    assert f"model-index written: {folder}" in printed and "1 record(s) measured weights that no zoo card" in printed
    card = ModelCard.load(folder / "README.md")
    got = {(r.task_type, r.dataset_type, r.metric_type, r.metric_value, r.metric_config, r.metric_args["record"],
            r.metric_args["record_sha256"]) for r in card.data.eval_results}
    assert got == {("image-classification", "embedded", "top1@20", 41.5, "embedded preset", knn.name,
                    sha256_file(knn)),
                   ("object-detection", "voc0712", "AP50", 80.25, "moco-detectron2", det.name, sha256_file(det)),
                   ("object-detection", "voc0712", "AP", 55.0, "moco-detectron2", det.name, sha256_file(det))}
    assert card.data.model_name == "moco_v2_r18.embedded" and card.data.library_name == "timm"
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n") and "model-index:" in text
    # the same records give the same card; the weights, config and recipe are untouched; plain timm loads it
    cli.main(["--results", str(d), "--out", str(out), "--published", str(PUBLISHED), "--no-plots", "--update-cards"])
    assert (folder / "README.md").read_text() == text
    assert hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest() == weights
    assert recipe_of(folder)["epochs"] == 3
    net = timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert type(net).__name__ == "ResNet"
