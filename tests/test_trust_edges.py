"""Trust at the edges (issue 20): data that cannot train fails before training, the zoo never overwrites
or mislabels, every weights file gets one clear answer, and what the help says runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hexa_zoo.cli import run_command
from hexa_zoo.errors import DataError, HexaError

TINY_PRETRAIN = ["--arch", "resnet10t", "--batch-size", "4", "--epochs", "1",
                 "--set", "workers=0", "threads=1", "augment.image_size=32", "moco.queue_size=16",
                 "moco.hidden_dim=32", "tensorboard=false", "progress=false", "monitor.every=0"]


def random_bytes_images(folder: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"broken{i}.jpg").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    return folder


def good_images(folder: Path, n: int, seed: int = 0, size: int = 32) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"good{i}.png")
    return folder


def zoo_entries() -> list[str]:
    zoo = Path(os.environ["HEXA_ZOO_HOME"])
    return sorted(p.name for p in zoo.iterdir()) if zoo.is_dir() else []


# ----------------------------------------------------------------------- 1. a run that trains on nothing
def test_a_folder_of_unreadable_images_fails_before_training_and_publishes_nothing(tmp_path, capsys):
    from pretrain.cli import main

    data = random_bytes_images(tmp_path / "data", 3)
    code = run_command("hexa pretrain", main, ["--method", "moco_v2", "--data", str(data), "--out",
                                                str(tmp_path / "run"), *TINY_PRETRAIN])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{data}: 3 image file(s), 0 readable and 3 unreadable" in err and "broken0.jpg" in err
    assert zoo_entries() == []
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "log.csv").exists()


def test_fewer_readable_images_than_a_batch_is_an_error_naming_the_count(tmp_path):
    from pretrain.config import load_recipe
    from pretrain.trainer import train

    data = good_images(random_bytes_images(tmp_path / "data", 4), 2)
    cfg = load_recipe("moco_v2_r18_embedded", [f"data={data}", f"out={tmp_path / 'run'}", "arch=resnet10t",
                                               "batch_size=4", "epochs=1", "workers=0", "progress=false"])
    with pytest.raises(DataError, match=r"6 image file\(s\), 2 readable and 4 unreadable.*needs 4 readable") as err:
        train(cfg)
    assert "lower --batch-size to at most 2" in err.value.fix
    assert zoo_entries() == []


def test_a_run_that_completed_no_step_never_publishes(tmp_path, monkeypatch):
    """The second guard: should every batch still be skipped (the first check let it through), nothing is published."""
    from pretrain import trainer
    from pretrain.config import load_recipe

    monkeypatch.setattr(trainer, "require_a_batch", lambda *a, **k: None)
    data = random_bytes_images(tmp_path / "data", 4)
    cfg = load_recipe("moco_v2_r18_embedded", [f"data={data}", f"out={tmp_path / 'run'}", "arch=resnet10t",
                                               "batch_size=4", "epochs=1", "workers=0", "progress=false",
                                               "augment.image_size=32", "tensorboard=false"])
    with pytest.raises(HexaError, match="completed no training step"):
        trainer.train(cfg)
    assert zoo_entries() == []


# ------------------------------------------------------------------------ 2. the zoo keeps what it has
@pytest.fixture(scope="module")
def tv18():
    from test_zoo_convert import random_torchvision

    return random_torchvision("resnet18", seed=5)


def test_zoo_publish_refuses_an_existing_tag_and_overwrite_records_what_it_replaced(tv18, tmp_path, capsys):
    from hexa_zoo import zoo_cli
    from hexa_zoo.fileio import sha256_file
    from test_zoo_convert import random_torchvision, trunk_of

    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    from safetensors.torch import save_file

    save_file(trunk_of(tv18), first)
    save_file(trunk_of(random_torchvision("resnet18", seed=6)), second)
    argv = ["publish", str(first), "--model", "moco_v2_r18", "--tag", "t1"]
    assert run_command("hexa zoo", zoo_cli.main, argv) == 0
    folder = Path(os.environ["HEXA_ZOO_HOME"]) / "moco_v2_r18.t1"
    kept = sha256_file(folder / "model.safetensors")
    capsys.readouterr()

    assert run_command("hexa zoo", zoo_cli.main, ["publish", str(second), "--model", "moco_v2_r18.t1"]) == 1
    err = capsys.readouterr().err
    assert "already holds moco_v2_r18.t1" in err and kept[:12] in err and "--overwrite" in err
    assert sha256_file(folder / "model.safetensors") == kept  # untouched

    assert run_command("hexa zoo", zoo_cli.main, ["publish", str(second), "--model", "moco_v2_r18.t1",
                                                  "--overwrite"]) == 0
    assert sha256_file(folder / "model.safetensors") != kept
    card = (folder / "README.md").read_text()
    assert f"| Replaced | weights sha256 `{kept}` from {first}" in card


def test_a_training_run_checks_its_publish_target_before_its_first_step(tmp_path, capsys):
    from pretrain.cli import main

    data = good_images(tmp_path / "pics", 8)
    run = ["--method", "moco_v2", "--data", str(data), *TINY_PRETRAIN]
    assert run_command("hexa pretrain", main, [*run, "--out", str(tmp_path / "a")]) == 0
    folder = Path(os.environ["HEXA_ZOO_HOME"]) / "moco_v2_resnet10t.pics_ep1"
    before = (folder / "model.safetensors").read_bytes()
    capsys.readouterr()

    # another run that would publish the same name.tag is refused before it trains anything
    assert run_command("hexa pretrain", main, [*run, "--out", str(tmp_path / "b"), "--seed", "1"]) == 1
    err = capsys.readouterr().err
    assert "already holds moco_v2_resnet10t.pics_ep1" in err and "nothing was trained" in err
    assert "--overwrite" in err and f"--resume auto --out {tmp_path / 'a'}" in err
    assert not (tmp_path / "b" / "checkpoints").exists()
    assert (folder / "model.safetensors").read_bytes() == before

    # the run that published it may continue (and re-publish its own weights); --overwrite replaces
    assert run_command("hexa pretrain", main, [*run, "--out", str(tmp_path / "a"), "--resume", "auto"]) == 0
    assert (folder / "model.safetensors").read_bytes() == before
    assert run_command("hexa pretrain", main, [*run, "--out", str(tmp_path / "b"), "--seed", "1",
                                               "--overwrite"]) == 0
    assert (folder / "model.safetensors").read_bytes() != before
    assert "Replaced" in (folder / "README.md").read_text()


def test_embedded_runs_publish_under_a_tag_that_says_their_length():
    from pretrain.config import load_recipe

    assert load_recipe("moco_v2_r18_embedded").resolved_tag() == "embedded"  # the recipe as it is
    assert load_recipe("moco_v2_r18_embedded", ["epochs=1"]).resolved_tag() == "embedded_ep1"
    assert load_recipe("hexa_moco_r18_embedded", ["limit_images=300"]).resolved_tag() == "embedded_ep10_img300"
    assert load_recipe("moco_v2_r18_embedded", ["epochs=1", "tag=mine"]).resolved_tag() == "mine"


def test_the_card_method_is_the_one_the_checkpoint_trained(tv18, tmp_path):
    from hexa_zoo.errors import ConfigError
    from hexa_zoo.publish import publish
    from test_zoo_convert import hexa_checkpoint

    ckpt = tmp_path / "moco.pt"
    torch.save(hexa_checkpoint(tv18, style="encoder_q"), ckpt)  # a MoCo-v2 training checkpoint
    with pytest.raises(ConfigError, match=r"trained with moco_v2, but hexa_moco_r18 is a hexa_moco model") as err:
        publish(ckpt, "hexa_moco_r18", tag="t1")
    assert "publish it as moco_v2_r18" in err.value.fix
    assert zoo_entries() == []
    folder = publish(ckpt, "my_trunk", tag="t1")  # an unregistered name: the card says what trained it
    assert "| Method | moco_v2 |" in (folder / "README.md").read_text()


def test_an_unregistered_name_is_published_with_the_load_line_that_works(tv18, tmp_path, capsys):
    import timm
    from safetensors.torch import save_file

    from hexa_zoo import zoo_cli
    from test_zoo_convert import trunk_of

    weights = tmp_path / "w.safetensors"
    save_file(trunk_of(tv18), weights)
    assert run_command("hexa zoo", zoo_cli.main, ["publish", str(weights), "--model", "my_custom_r18",
                                                  "--tag", "t1"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("load it:"))
    assert "create_model('my_custom_r18" not in line
    code = line.removeprefix("load it: ").split(" (or ")[0]
    model = eval(code, {"timm": timm})  # the printed line, as printed
    assert model.num_classes == 0 and torch.equal(model.state_dict()["conv1.weight"], trunk_of(tv18)["conv1.weight"])


def test_a_bad_model_name_is_quoted_whole(tmp_path, capsys):
    from hexa_zoo import zoo_cli

    assert run_command("hexa zoo", zoo_cli.main, ["publish", str(tmp_path / "w.safetensors"),
                                                  "--model", "../x"]) == 1
    assert "'../x' is not a usable model name" in capsys.readouterr().err


def test_timm_lists_as_pretrained_only_tags_whose_weights_exist_somewhere():
    import timm
    from timm.models import get_pretrained_cfg

    import hexa_zoo  # noqa: F401
    from hexa_zoo.releases import RELEASES

    assert timm.list_models("hexa*", pretrained=True) == []  # the HEXA paper released no weights
    listed = set(timm.list_models(["moco_v2*", "dcluster_v2*", "swav*"], pretrained=True))
    assert listed == {n for n in RELEASES if n.startswith(("moco_v2_r50.", "dcluster_v2_r50.", "swav_r50."))}
    assert all(get_pretrained_cfg(name).url for name in listed)


# ------------------------------------------------------------- 3. every weights file gets one clear answer
def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the error must call it)."""
    import timm

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    good = folder / "good.pth"
    torch.save({"state_dict": timm.create_model("resnet18", num_classes=0).state_dict()}, good)
    data = good.read_bytes()
    files = {
        "empty": (b"", "is an empty file (0 bytes)"),
        "truncated": (data[: len(data) // 3], "is a zip archive"),
        "text": (b"<html>404 Not Found</html>\n", "is a text file"),
        "random": (np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
                   "is neither a PyTorch checkpoint nor a safetensors file"),
    }
    out = {}
    for name, (content, what) in files.items():
        path = folder / f"{name}.pth"
        path.write_bytes(content)
        out[name] = (path, what)
    return out


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return _bad_files(tmp_path_factory.mktemp("bad_weights"))


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "random"])
def test_every_reader_gives_one_clear_error_for_a_file_that_is_not_weights(bad_files, kind, tmp_path, capsys):
    from hexa_zoo import load_trunk, zoo_cli
    from hexa_zoo.errors import CheckpointFormatError
    from transfer.common import load_model

    path, what = bad_files[kind]
    for argv in (["convert", str(path), str(tmp_path / "out.safetensors")],
                 ["publish", str(path), "--model", "moco_v2_r18", "--tag", "t1"]):
        assert run_command("hexa zoo", zoo_cli.main, argv) == 1
        err = capsys.readouterr().err
        assert f"error: {path} {what}" in err and "Traceback" not in err
        assert "arbitrary code" not in err and "weights_only=False" not in err
    for read in (load_trunk, load_model):
        with pytest.raises(CheckpointFormatError, match=re.escape(f"{path} {what}")):
            read(str(path))
    assert zoo_entries() == [] and not (tmp_path / "out.safetensors").exists()


def test_a_damaged_zoo_folder_is_named_by_timm_and_load_trunk(tv18, tmp_path):
    import timm

    from hexa_zoo import load_trunk
    from hexa_zoo.errors import CheckpointFormatError
    from hexa_zoo.publish import publish
    from test_zoo_convert import trunk_of

    folder = publish(trunk_of(tv18), "moco_v2_r18", tag="t1")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for load in (lambda: timm.create_model("moco_v2_r18.t1", pretrained=True), lambda: load_trunk(str(folder))):
        with pytest.raises(CheckpointFormatError, match=f"{weights} is a damaged safetensors file: .*truncated"):
            load()


def test_the_arbitrary_code_refusal_is_kept_for_a_pickle_that_references_code(tmp_path):
    import pickle

    from hexa_zoo.checkpoint_files import read_checkpoint
    from hexa_zoo.errors import UnsafeCheckpointError

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo never",))

    plain, zipped = tmp_path / "plain.pth", tmp_path / "zipped.pth"
    plain.write_bytes(pickle.dumps({"state_dict": Payload()}, protocol=4))
    torch.save({"state_dict": Payload()}, zipped)
    for path in (plain, zipped):
        with pytest.raises(UnsafeCheckpointError, match=f"refusing to load {path}: .*{os.name}.system"):
            read_checkpoint(path)


# ------------------------------------------------------------------ 4. the default preset follows the data
@pytest.mark.parametrize("data, expected", [("embedded", "embedded"), ("/data/dtd", "paper")])
def test_every_protocol_defaults_to_the_preset_of_its_data(monkeypatch, capsys, data, expected):
    from transfer import cli, suite

    ran = []

    def fake_run(name, model, data, out, *, preset, overrides=(), seed=0):
        ran.append((name, preset))
        return {"benchmark": f"{name}_bench", "preset": preset, "metrics": {"top1": {"mean": 50.0, "n": 1}},
                "_path": "r.json"}

    monkeypatch.setattr(suite, "run_protocol", fake_run)
    for name in cli.PROTOCOLS:
        assert cli.main([name, "--model", "m", "--data", data, "--out", "o"]) == 0
        assert f"{name}_bench ({expected} preset): top1 50.00" in capsys.readouterr().out
    assert ran == [(name, expected) for name in cli.PROTOCOLS]


def test_the_help_lists_each_protocols_presets_by_name():
    import importlib

    from transfer import cli

    for name, module in cli.PROTOCOLS.items():
        assert cli.PRESET_NAMES[name] == tuple(sorted(importlib.import_module(module).PRESETS)), name


# ------------------------------------------------------------------------------------- 7. smaller ones
def test_robustness_trains_its_fast_head_on_the_whole_train_split(r18_file, tmp_path, monkeypatch):
    """It trained on max_per_class (10) images a class: the weight decay was chosen on one held-out image
    a class (0.00 at every value) and the head was far weaker than `linear --preset embedded_fast`'s."""
    from hexa_zoo.embedded import resolve_data
    from transfer.protocols import robustness

    seen = []

    class Stop(Exception):
        pass

    def spy(run, train, val, transform):
        seen.append((len(train.paths), len(val.paths)))
        raise Stop

    monkeypatch.setattr(robustness, "fast_head", spy)
    with pytest.raises(Stop):
        robustness.run(str(r18_file), "embedded", tmp_path, preset="embedded")
    train_images = sum(1 for _ in (resolve_data("embedded") / "classify" / "train").rglob("*.png"))
    assert seen == [(train_images, 10 * 10)]  # every train image; the test split stays at 10 a class


def test_eurosat_is_read_from_its_parent_or_from_2750_itself(tmp_path):
    from transfer.readers.cdfsl import read_cdfsl

    for c in range(3):
        good_images(tmp_path / "EuroSAT" / "2750" / f"Class{c}", 2, seed=c, size=8)
    parent, itself = read_cdfsl(tmp_path / "EuroSAT"), read_cdfsl(tmp_path / "EuroSAT" / "2750")
    assert parent[0] == itself[0] == "eurosat"
    assert parent[1].paths == itself[1].paths and parent[1].classes == itself[1].classes == ["Class0", "Class1", "Class2"]


def test_manyshot_names_the_layout_of_a_missing_folder_before_loading_the_model(tmp_path, monkeypatch):
    from transfer.protocols import manyshot
    from transfer import runner

    monkeypatch.setattr(runner.ProtocolRun, "start", lambda *a, **k: pytest.fail("the model was loaded first"))
    with pytest.raises(DataError, match=r"cifar10: /nonexistent is not a folder; expected .*cifar-10-batches-py"):
        manyshot.run("no_model_needed", "/nonexistent", tmp_path, preset="paper", overrides=["dataset=cifar10"])


def test_hard_view_settings_on_a_method_without_hard_views_are_refused():
    from hexa_zoo.errors import ConfigError
    from pretrain.config import load_recipe

    with pytest.raises(ConfigError, match="hard_views.eps is set, but moco_v2 has no hard views") as err:
        load_recipe("moco_v2_r18_embedded", ["hard_views.eps=0.01"])
    assert "--method hexa_moco" in err.value.fix
    assert load_recipe("hexa_moco_r18_embedded", ["hard_views.eps=0.01"]).hard_views.eps == 0.01


def test_hexa_leaderboard_without_records_creates_nothing_and_an_empty_folder_is_warned(tmp_path, monkeypatch,
                                                                                       capsys, caplog):
    from leaderboards import cli as board

    monkeypatch.chdir(tmp_path)
    assert run_command("hexa leaderboard", board.main, []) == 1
    assert "no records to compile" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no ./leaderboards/ left behind
    (tmp_path / "empty").mkdir()
    with caplog.at_level("WARNING"):
        assert run_command("hexa leaderboard", board.main, ["--results", "empty", "--out", "board",
                                                             "--no-plots"]) == 0
    assert any("no result records (*.json) under empty" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------- 6. progress and Ctrl-C
def test_long_steps_report_progress_in_a_log_when_no_terminal_draws_a_bar(caplog):
    from transfer.progress import progress

    with caplog.at_level("INFO", logger="transfer"):
        assert list(progress(iter(range(3)), desc="knn train: features of 300 images", total=3, every_s=0)) == [0, 1, 2]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "knn train: features of 300 images: 3 batch(s)..."
    assert "knn train: features of 300 images: 2/3 batch(s) in 0 s" in lines
    assert lines[-1] == "knn train: features of 300 images: 3 batch(s) done in 0 s"


def test_feature_extraction_logs_its_progress(r18_file, tmp_path, caplog):
    from hexa_zoo import load_trunk
    from transfer.features import EvalTransform, extract_features

    paths = sorted(good_images(tmp_path / "imgs", 3).glob("*.png"))
    model, info = load_trunk(str(r18_file))
    with caplog.at_level("INFO", logger="transfer"):
        extract_features(model, paths, EvalTransform.for_model(info, 32, 32), weights_sha256=None, desc="probe")
    assert any(r.getMessage() == "probe: features of 3 images: 1 batch(s)..." for r in caplog.records)


def _sigint_disposition(_):
    import signal

    return signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_loader_workers_leave_ctrl_c_to_the_main_process(monkeypatch, r18_file, tmp_path):
    """Ctrl-C reaches every process of the terminal's group: workers ignore it, so they print no traceback."""
    from torch.utils.data import DataLoader

    from hexa_zoo.data import ignore_interrupt
    from transfer import features

    ignored = list(DataLoader(range(2), num_workers=1, worker_init_fn=ignore_interrupt, collate_fn=_sigint_disposition))
    assert ignored == [True, True]
    made = []
    monkeypatch.setattr(features, "DataLoader", lambda *a, **k: made.append(k) or DataLoader(*a, **k))
    from hexa_zoo import load_trunk

    model, info = load_trunk(str(r18_file))
    paths = sorted(good_images(tmp_path / "imgs", 2).glob("*.png"))
    features.extract_features(model, paths, features.EvalTransform.for_model(info, 32, 32), weights_sha256=None)
    assert made[0]["worker_init_fn"] is ignore_interrupt


def test_ctrl_c_while_a_command_loads_is_one_line(monkeypatch, capsys):
    import importlib

    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    try:
        assert cli_main(["transfer", "knn", "--help"]) == 130
    except KeyboardInterrupt:
        pytest.fail("the interrupt escaped as a traceback")
    assert capsys.readouterr().err == "hexa transfer: interrupted\n"


def cli_main(argv):
    from hexa_zoo.cli import main

    return main(argv)


@pytest.mark.parametrize("protocol,key", [("finetune", "checkpoint_every"), ("detection", "log_every")])
def test_a_period_of_zero_steps_is_refused_with_the_fix(protocol, key):
    import importlib

    from transfer.common import resolve_config

    module = importlib.import_module(f"transfer.protocols.{protocol}")
    cfg_type = type(module.PRESETS["embedded"])
    with pytest.raises(HexaError, match=rf"{key}=0: a period in steps must be at least 1"):
        resolve_config(cfg_type, module.PRESETS, "embedded", [f"{key}=0"])
    assert getattr(resolve_config(cfg_type, module.PRESETS, "embedded", [f"{key}=3"]), key) == 3
