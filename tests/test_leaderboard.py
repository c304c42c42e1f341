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
from hexa_zoo.errors import DataError

REPO = Path(__file__).resolve().parent.parent
PUBLISHED = REPO / "leaderboards" / "published.csv"


def write(results, model, benchmark, metrics, *, seed=0, dataset="embedded", preset="embedded",
          created=None, source=None, config=None):
    rec = records.make_record(
        protocol=benchmark.split("_", 1)[1], benchmark=benchmark, preset=preset,
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

    # the HEXA row links its recipe (the model card of its zoo folder)
    line = next(l for l in readme.splitlines() if "**hexa_moco_r18.embedded**" in l and "embedded_knn" not in l
                and "[recipe]" in l)
    recipe = re.search(r"\[recipe\]\(([^)]+)\)", line)[1]
    assert (out / recipe).read_text().startswith("# card")
    assert row_of(knn, "hexa_moco_r18.embedded")["epochs"] == "3"  # read from the card's recipe
    # embedded tables sit in their own part, with the line that says what they were measured on
    assert readme.index("## Embedded dataset") < readme.index("`embedded_knn`")
    assert "never with the ImageNet-scale tables" in readme
    assert {"hexa_vs_baseline.png", "lowshot_embedded_lowshot_svm.png",
            "lowshot_voc07_lowshot_svm.png"} <= {p.name for p in (out / "plots").iterdir()}


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
    # only the row of the weights the zoo folder holds links that folder's recipe
    assert "[recipe]" in lines["bbbbbbbb"] and "[recipe]" not in lines["aaaaaaaa"]


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
    assert len(rows) >= 60
    for row in rows:
        table, metric = published.normalise_benchmark(row["benchmark"], row["metric"])
        section = readme[readme.index(f"`{table}`"):]
        section = section[:section.index("CSV:")]
        header = next(l for l in section.splitlines() if l.startswith("| Model"))
        col = [c.strip() for c in header.strip("|").split("|")].index(metric)
        matches = [l for l in section.splitlines()
                   if l.startswith(f"| {row['method']}") and row["source"] in l and row["note"] in l
                   and [c.strip() for c in l.strip("|").split("|")][col] == row["value"]]
        assert matches, f"{row} is missing from the README"
        assert all(("†" in l) == (row["verified"] == "no") for l in matches)
    assert {r["verified"] for r in rows if r["method"].startswith("HEXA")} == {"no"}
    assert {r["verified"] for r in rows if not r["method"].startswith("HEXA")} == {"yes"}


def test_refresh_published_rebuilds_the_committed_file(tmp_path):
    shared = REPO.parent / "shared" / "reference_results.csv"
    if shared.is_file():  # a clone with ../shared beside it: the committed file is exactly what refresh builds
        assert published.refresh_published(shared, tmp_path / "p.csv").read_bytes() == PUBLISHED.read_bytes()
    src = tmp_path / "refs.csv"
    src.write_text("method,arch,epochs,benchmark,metric,value,source,note\n"
                   "X,resnet50,100,imagenet_linear,top1,70.1,some README,\n"
                   "Y,resnet50,,imagenet_linear,top1,71.0,an aggregator,numbers not verified\n")
    published.refresh_published(src, tmp_path / "p2.csv")
    with open(tmp_path / "p2.csv", newline="") as f:
        assert [(r["method"], r["verified"]) for r in csv.DictReader(f)] == [("X", "yes"), ("Y", "no")]
    src.write_text("method,value\nX,abc\n")
    with pytest.raises(DataError, match="lacks the column"):
        published.refresh_published(src, tmp_path / "p3.csv")


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
    assert {p.suffix for p in first.written} == {".csv", ".png", ".md"}
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
