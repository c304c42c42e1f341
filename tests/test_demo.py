"""`hexa demo`: the budget plan, reuse of finished steps, and a tiny run end to end."""

import json
import os
import re
from pathlib import Path

import pytest

from hexa_zoo import records
from leaderboards.compiler import compile_leaderboard
from orchestration import demo, demo_transfer


def test_budget_scales_the_images_seen():
    # at least one pass: epochs = budget x recipe epochs, every image
    assert demo.scale_epochs(1.0, 20, 2000) == (20, 0)
    assert demo.scale_epochs(0.5, 20, 2000) == (10, 0)
    assert demo.scale_epochs(2.6, 20, 2000) == (52, 0)
    # below one pass: one epoch on budget x epochs x images images, never fewer than MIN_IMAGES
    assert demo.scale_epochs(0.02, 20, 2000) == (1, 800)
    assert demo.scale_epochs(0.3, 2, 2000) == (1, 1200)
    assert demo.scale_epochs(1e-5, 20, 2000) == (1, demo.MIN_IMAGES)
    assert demo.default_methods(1.0) == ("moco_v2", "hexa_moco")
    assert demo.default_methods(demo.DCLUSTER_MIN_BUDGET) == ("moco_v2", "hexa_moco", "dcluster_v2", "hexa_dcluster")


def _step(tmp_path, **kw):
    values = dict(method="hexa_moco", recipe="hexa_moco_r18_embedded", arch="resnet18", epochs=2, limit_images=0,
                  seed=0, run_dir=tmp_path / "runs" / "hexa_moco", model="hexa_moco_r18.embedded")
    values.update(kw)
    return demo.PretrainStep(**values)


def _fake_publish(step, recipe):
    folder = Path(step.zoo or os.environ["HEXA_ZOO_HOME"]) / step.model
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(b"not used here")
    (folder / "config.json").write_text(json.dumps({"architecture": step.arch}))
    lines = "\n".join(f"{k}: {json.dumps(v)}" for k, v in recipe.items())
    (folder / "README.md").write_text(f"# {step.model}\n\n## Recipe\n\n```yaml\n{lines}\n```\n")


def test_finished_pretraining_is_recognised_by_its_zoo_folder_and_recipe(tmp_path):
    step = _step(tmp_path)
    assert not demo.pretrain_done(step)
    _fake_publish(step, {**step.recipe_values(), "lr": 0.12})
    assert demo.pretrain_done(step)
    # a different budget (epochs) or seed is not the same run
    assert not demo.pretrain_done(_step(tmp_path, epochs=3))
    assert not demo.pretrain_done(_step(tmp_path, seed=1))
    cfg = demo.pretrain_config(step)
    assert (cfg.method, cfg.data, cfg.epochs, cfg.limit_images, cfg.seed) == ("hexa_moco", "embedded", 2, 0, 0)


def test_a_zoo_of_its_own_is_passed_to_each_step_not_set_in_the_environment(tmp_path):
    home = os.environ["HEXA_ZOO_HOME"]
    step = _step(tmp_path, zoo=tmp_path / "own_zoo")
    assert demo.zoo_folder(step) == tmp_path / "own_zoo" / "hexa_moco_r18.embedded"
    assert demo.zoo_folder(_step(tmp_path)) == Path(home) / "hexa_moco_r18.embedded"
    _fake_publish(step, step.recipe_values())
    assert demo.pretrain_done(step) and not demo.pretrain_done(_step(tmp_path))
    assert demo.pretrain_config(step).zoo == str(tmp_path / "own_zoo")  # the trainer publishes there
    assert demo.transfer_spec(step) == str(demo.zoo_folder(step)) and demo.transfer_spec(_step(tmp_path)) == step.model
    assert os.environ["HEXA_ZOO_HOME"] == home


def test_a_protocol_is_done_only_for_the_same_weights_and_sizes(tmp_path):
    step = _step(tmp_path)
    results = tmp_path / "results"
    rec = records.make_record(protocol="knn", benchmark="embedded_knn", preset="embedded",
                              dataset={"name": "embedded"}, model={"name": step.model, "weights_sha256": "abc"},
                              metrics={"top1@20": records.metric(50.0)}, config={"max_per_class": 20, "ks": [20]},
                              seed=0)
    records.write_record(results, rec)
    tiny = demo_transfer.expected_sizes(0.002)["knn"]["max_per_class"]
    assert tiny == 20  # max(20, 200 x budget) images per class below budget 1
    assert demo_transfer.done_protocols(results, step.model, "abc", 0.002) == {"knn"}
    assert demo_transfer.done_protocols(results, step.model, "other weights", 0.002) == set()
    assert demo_transfer.done_protocols(results, step.model, "abc", demo_transfer.FULL_SUITE_BUDGET) == set()  # full preset: all images


@pytest.mark.parametrize("budget,expected", [
    (1.0, {"linear": {"variant": "fast"}, "lowshot-svm": {"num_samples": 2}, "semisup": {"epochs": 1, "decay_epochs": [1]},
           "fewshot": {"episodes": 200},
           "detection": {"max_iter": 13, "steps": [9], "warmup_iters": 5, "precise_bn_iters": 5}}),
    (0.25, {"linear": {"variant": "fast", "max_per_class": 50}, "knn": {"max_per_class": 50},
            "lowshot-svm": {"num_samples": 2}, "semisup": {"epochs": 1, "decay_epochs": [1]}, "fewshot": {"episodes": 50},
            "detection": {"max_iter": 4, "steps": [3], "warmup_iters": 2, "precise_bn_iters": 4}}),
    (2.0, {"linear": {"variant": "fast"}, "lowshot-svm": {"num_samples": 3}, "semisup": {"epochs": 1, "decay_epochs": [1]},
           "fewshot": {"episodes": 400},
           "detection": {"max_iter": 27, "steps": [20], "warmup_iters": 5, "precise_bn_iters": 5}}),
    (3.0, {}),
])
def test_the_demo_shrinks_each_protocol_by_its_own_embedded_sizes(budget, expected):
    """The sizes the demo passes below the full suite, as each protocol states them (the values the demo's
    own table gave before the protocols owned them)."""
    assert demo_transfer.transfer_sizes(budget) == expected


def test_comparison_pairs_hexa_with_its_baseline_beside_the_untrained_trunk(tmp_path):
    results = tmp_path / "results"
    untrained = "resnet18_untrained_seed0.safetensors"
    for model, value in (("moco_v2_r18.embedded", 40.0), ("hexa_moco_r18.embedded", 43.5), (untrained, 21.25)):
        rec = records.make_record(protocol="knn", benchmark="embedded_knn", preset="embedded",
                                  dataset={"name": "embedded", "fingerprint": "sha256:ab"},
                                  model={"name": model, "weights_sha256": model + "0" * 20},
                                  metrics={"top1@20": records.metric(value)}, config={}, seed=0)
        records.write_record(results, rec)
    compiled = compile_leaderboard([results], tmp_path / "board", plots=False)
    current = {model: model + "0" * 20 for model in ("moco_v2_r18.embedded", "hexa_moco_r18.embedded", untrained)}
    lines = demo.comparison_lines(compiled, current, untrained=untrained)
    row = next(line for line in lines if "top1@20" in line)
    assert re.search(r"40\.00\s+43\.50\s+\+3\.50\s+21\.25$", row)
    row = next(line for line in demo.comparison_lines(compiled, current) if "top1@20" in line)
    assert row.endswith("-")  # no untrained trunk named: no reference number
    # rows of other weights (an older run) are left out of the comparison
    assert demo.comparison_lines(compiled, {"moco_v2_r18.embedded": "other"}) == []


def test_tiny_demo_end_to_end_then_reuse(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["--budget", "0.002", "--out", str(out), "--protocols", "knn"]
    assert demo.main(argv) == 0
    printed = capsys.readouterr().out
    readme = (out / "leaderboard" / "README.md").read_text()
    # a 1-epoch run on 64 images is not the embedded recipe: its tag says so (never the recipe's "embedded")
    pair = ("hexa_moco_r18.embedded_ep1_img64", "moco_v2_r18.embedded_ep1_img64")
    for model in pair:
        assert f"**{model}**" in readme
        assert (Path(os.environ["HEXA_ZOO_HOME"]) / model / "model.safetensors").is_file()
        assert model in printed
    untrained = "resnet18_untrained_seed0.safetensors"
    assert (out / "untrained" / untrained).is_file() and f"**{untrained}**" in readme
    assert "HEXA - base" in printed and "leaderboard:" in printed
    assert "cannot tell HEXA from its baseline" in printed  # one seed says so plainly
    comparison = printed.split("HEXA against its baseline")[1]
    knn_row = next(line for line in comparison.splitlines() if "top1@20" in line)
    assert re.search(r"\d+\.\d\d$", knn_row)  # the untrained trunk's kNN, beside the pair
    assert (out / "leaderboard" / "plots" / "pretrain_curves.png").is_file()
    got, skipped = records.read_records([out / "results"])
    assert got and not skipped
    assert {r["model"]["name"] for r in got} == {*pair, untrained}

    # a second demo reuses every finished step: no training, no new records, the same leaderboard
    before = readme
    weights = sorted(Path(os.environ["HEXA_ZOO_HOME"]).glob("*/model.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in weights]
    assert demo.main(argv) == 0
    again = capsys.readouterr().out
    assert again.count("reusing") >= 2
    assert [p.stat().st_mtime_ns for p in weights] == stamps  # not re-published
    assert len(records.read_records([out / "results"])[0]) == len(got)
    assert (out / "leaderboard" / "README.md").read_text() == before

    # --force redoes every step: re-published weights, new records added beside the old ones (never edited)
    assert demo.main(argv + ["--force"]) == 0
    capsys.readouterr()
    assert [p.stat().st_mtime_ns for p in weights] != stamps
    assert len(records.read_records([out / "results"])[0]) == 2 * len(got)
