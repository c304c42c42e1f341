"""The pre-training trainer: exact resume after SIGKILL, DDP on gloo, NaN stop, bad images, publishing,
the lr schedules and LARC against their published formulas, and every shipped recipe."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hexa_zoo.catalog import EMBEDDED_TAG, FAMILIES, METHODS, zoo_model_name
from hexa_zoo.errors import HexaError
from pretrain.config import METHOD_CLASSES, PretrainConfig, build_method, load_recipe, recipe_names
from pretrain.data.sampling import SeededViews
from pretrain.loop import trainer
from pretrain.loop.checkpoint import checkpoint_name, list_checkpoints
from pretrain.loop.divergence import TrainingDivergedError
from pretrain.loop.optim import LARC

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine run several times faster on one intra-op thread; the
    resume test's subprocess uses one too, so both halves compute bit for bit alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_images(folder: Path, n: int, size: int = 32, seed: int = 0, classes: int = 2) -> Path:
    """n small pictures in an ImageFolder tree: a coloured box or disc on a noisy coloured background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        img = np.clip(rng.uniform(0, 255, 3) + rng.normal(0, 20, (size, size, 3)), 0, 255)
        cy, cx, r = rng.uniform(size * 0.3, size * 0.7, 2).tolist() + [rng.uniform(size * 0.15, size * 0.3)]
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) if i % classes else ((abs(yy - cy) < r) & (abs(xx - cx) < r))
        img[mask] = rng.uniform(0, 255, 3)
        out = folder / f"c{i % classes}" / f"{i:03d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.astype(np.uint8)).save(out)
    return folder


TINY = ["workers=0", "threads=1", "augment.image_size=32", "moco.queue_size=16", "moco.hidden_dim=64", "checkpoint_every_steps=2",
        "keep_checkpoints=10", "log_every_steps=1", "tensorboard=false", "progress=false", "publish=false", "lr=0.3"]


def tiny_cfg(data: Path, out: Path, pipeline: str = "auto", **changes) -> PretrainConfig:
    """MoCo-v2 on resnet10t at 32 px with a small queue, few steps, checkpoints and logs every step."""
    base = load_recipe("moco_v2_r18_embedded", [f"data={data}", f"out={out}", "arch=resnet10t", "epochs=2",
                                                "batch_size=8", "seed=3", f"augment.pipeline={pipeline}", *TINY])
    return dataclasses.replace(base, **changes)


def csv_rows(out: Path) -> list[dict]:
    with open(out / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def newest_model(out: Path) -> dict:
    return torch.load(list_checkpoints(out)[-1], map_location="cpu", weights_only=True)["model"]


# ---------------------------------------------------------------------------------------- recipes
def test_every_recipe_parses_with_the_published_constants():
    names = recipe_names()
    expected = {"moco_v2_r50_200ep", "moco_v2_r50_800ep", "dcluster_v2_r50_400ep", "dcluster_v2_r50_800ep",
                "hexa_moco_r50_200ep", "hexa_dcluster_r50_800ep", "moco_v2_r18_embedded",
                "hexa_moco_r18_embedded", "dcluster_v2_r18_embedded", "hexa_dcluster_r18_embedded"}
    assert expected <= set(names)
    cfgs = {name: load_recipe(name) for name in names}
    assert all(isinstance(c, PretrainConfig) for c in cfgs.values())
    moco = cfgs["moco_v2_r50_200ep"]  # facebookresearch/moco, --mlp --moco-t 0.2 --aug-plus --cos
    assert (moco.arch, moco.epochs, moco.batch_size, moco.lr, moco.weight_decay) == ("resnet50", 200, 256, 0.03, 1e-4)
    assert (moco.moco.queue_size, moco.moco.momentum, moco.moco.temperature, moco.moco.dim) == (65536, 0.999, 0.2, 128)
    assert moco.augment.crop_scale == (0.2, 1.0) and moco.augment.color_jitter == (0.4, 0.4, 0.4, 0.1)
    assert cfgs["moco_v2_r50_800ep"].epochs == 800
    dc = cfgs["dcluster_v2_r50_800ep"]  # swav's deepclusterv2_800ep script
    assert (dc.optimizer, dc.batch_size, dc.lr, dc.final_lr, dc.warmup_epochs, dc.warmup_start_lr, dc.weight_decay) == (
        "lars", 4096, 4.8, 0.0048, 10, 0.3, 1e-6)
    assert dc.scaled(dc.lr) == 4.8  # swav's lr is stated for its own batch of 4096
    assert dc.augment.crop_sizes == (224, 96) and dc.augment.crop_counts == (2, 6)
    assert dc.augment.crop_min_scale == (0.14, 0.05) and dc.augment.crop_max_scale == (1.0, 0.14)
    assert cfgs["dcluster_v2_r50_400ep"].augment.crop_sizes == (160, 96)
    assert cfgs["dcluster_v2_r50_400ep"].augment.crop_min_scale == (0.08, 0.05)  # its own script
    assert cfgs["dcluster_v2_r50_400ep"].augment.crop_counts == (2, 4)
    # The method name alone switches the hard views on.
    for name, cfg in cfgs.items():
        assert cfg.hard_views.enabled == name.startswith("hexa_"), name
    for name in names:
        if name.endswith("_embedded"):
            assert cfgs[name].arch == "resnet18" and cfgs[name].resolved_tag() == "embedded"
    # Overrides reach nested sections; a typo is refused with the valid keys.
    cfg = load_recipe("hexa_moco_r18_embedded", ["hard_views.eps=0.01", "lr=0.5"])
    assert cfg.hard_views.eps == 0.01 and cfg.lr == 0.5
    with pytest.raises(HexaError, match="unknown"):
        load_recipe("hexa_moco_r18_embedded", ["moco.queue_sise=3"])
    with pytest.raises(HexaError, match="no recipe named"):
        load_recipe("no_such_recipe")


def test_method_sections_are_the_catalog_families():
    """PretrainConfig's typed method sections, the family -> class map and the catalog's families are the same
    list: one section per family, typed by the config of its class's module (pretrain/methods/<family>.py),
    and a saved config keeps only its own."""
    assert list(METHOD_CLASSES) == list(FAMILIES)
    fields = {f.name: f for f in dataclasses.fields(PretrainConfig)}
    class_modules = {cls.__module__ for cls in METHOD_CLASSES.values()}
    sections = {name for name, f in fields.items() if f.default_factory is not dataclasses.MISSING
                and f.default_factory.__module__ in class_modules}  # a method module's config
    assert sections == set(FAMILIES)
    for family in FAMILIES:  # the section named after a family is typed by that family's module
        assert fields[family].default_factory.__module__ == METHOD_CLASSES[family].__module__
        assert METHOD_CLASSES[family].__module__ == f"pretrain.methods.{family}"
    for method in METHODS.values():
        saved = load_recipe(method.recipes[EMBEDDED_TAG]).to_dict()
        assert [s for s in FAMILIES if s in saved] == [method.module], method.name


def test_zoo_model_name_rule():
    assert zoo_model_name("hexa_moco", "resnet18") == "hexa_moco_r18"
    assert zoo_model_name("dcluster_v2", "resnet50") == "dcluster_v2_r50"
    assert zoo_model_name("moco_v2", "resnet10t") == "moco_v2_resnet10t"


# -------------------------------------------------------------------------------- schedule and LARC
def test_lr_schedules_match_moco_and_swav():
    steps_per_epoch = 7
    # MoCo main_moco.py adjust_learning_rate with --cos: lr * 0.5 * (1 + cos(pi * epoch / epochs)), per epoch
    moco = dataclasses.replace(PretrainConfig(), lr=0.03, batch_size=512, epochs=10, schedule_unit="epoch")
    for step in range(70):
        epoch = step // steps_per_epoch
        assert math.isclose(trainer.learning_rate(moco, step, steps_per_epoch),
                            0.06 * 0.5 * (1 + math.cos(math.pi * epoch / 10)), rel_tol=1e-12)
    # swav main_deepclusterv2.py: linspace warm-up, then per-iteration cosine to final_lr
    dc = dataclasses.replace(PretrainConfig(), lr=4.8, final_lr=0.0048, warmup_start_lr=0.3, warmup_epochs=2,
                             epochs=6, batch_size=4096, lr_reference_batch=4096, schedule_unit="step")
    warm = np.linspace(0.3, 4.8, steps_per_epoch * 2)  # swav: np.linspace(start_warmup, base_lr, len(loader) * warmup_epochs)
    iters = np.arange(steps_per_epoch * 4)
    cos = np.array([0.0048 + 0.5 * (4.8 - 0.0048) * (1 + math.cos(math.pi * t / len(iters))) for t in iters])
    swav = np.concatenate([warm, cos])
    ours = np.array([trainer.learning_rate(dc, s, steps_per_epoch) for s in range(len(swav))])
    # swav's linspace ends at base_lr on its last warm-up step; ours reaches it one step later (same ramp slope)
    assert np.allclose(ours[len(warm):], swav[len(warm):], rtol=1e-12)
    assert np.allclose(ours[:len(warm)], 0.3 + (4.8 - 0.3) * np.arange(len(warm)) / len(warm), rtol=1e-12)


def test_larc_step_matches_the_apex_formula():
    torch.manual_seed(0)
    w = torch.randn(5, 3, requires_grad=True)
    zero = torch.zeros(4, requires_grad=True)
    w0 = w.detach().clone()
    opt = LARC([w, zero], lr=0.5, momentum=0.0, weight_decay=0.1, trust_coefficient=0.02)
    g = torch.randn(5, 3)
    w.grad, zero.grad = g.clone(), torch.ones(4)
    opt.step()
    rate = 0.02 * w0.norm() / (g.norm() + 0.1 * w0.norm() + 1e-8)
    assert torch.allclose(w.detach(), w0 - 0.5 * rate * (g + 0.1 * w0), atol=1e-7)
    assert torch.allclose(zero.detach(), torch.full((4,), -0.5))  # zero norm: plain SGD (wd off inside LARC)
    assert opt.param_groups[0]["weight_decay"] == 0.1  # restored after the step


# ---------------------------------------------------------------------------------------- the data
def test_views_are_seeded_per_sample_and_stay_in_pixel_space(tmp_path):
    from pretrain.data.augment import multicrop_transform, two_view_transform
    from hexa_zoo.data import ImageFolderDataset

    data = make_images(tmp_path / "imgs", 4)
    cfg = load_recipe("dcluster_v2_r18_embedded")
    base = ImageFolderDataset(data, transform=multicrop_transform(cfg.augment))
    views = SeededViews(base, seed=1)
    first = views[2][0]
    assert len(first) == sum(cfg.augment.crop_counts)
    assert [v.shape[-1] for v in first] == [s for s, c in zip(cfg.augment.crop_sizes, cfg.augment.crop_counts)
                                            for _ in range(c)]
    assert all(v.dtype == torch.uint8 for v in first)  # uint8 through the loader; float [0, 1] on the device:
    from pretrain.data.device_augment import finish_views

    assert all(v.dtype == torch.float32 and v.min() >= 0 and v.max() <= 1
               for v in finish_views([v[None] for v in first], torch.device("cpu")))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    again = views[2][0]
    assert torch.equal(torch.get_rng_state(), before)  # loading leaves the training RNG alone
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    views.set_epoch(1)
    assert not torch.equal(views[2][0][0], first[0])
    two = SeededViews(ImageFolderDataset(data, transform=two_view_transform(cfg.augment)), seed=1)[0][0]
    assert len(two) == 2 and not torch.equal(two[0], two[1])
    subset, _, notes = trainer.build_dataset(dataclasses.replace(cfg, data=str(data), limit_images=3))
    assert len(subset) == 3 and len(set(subset.indices)) == 3 and "subset of 3 of the 4" in notes[0]
    assert [subset[i][2] for i in range(3)] == [0, 1, 2]  # indices are positions in the subset (memory bank rows)


def test_batch_too_large_for_the_data_shrinks_with_a_note():
    batch, notes = trainer.fit_batch(256, 40, 1)
    assert batch == 40 and any("larger than the dataset" in n for n in notes)
    batch, notes = trainer.fit_batch(8, 30, 2)  # 15 per process: one batch of 4, 3 images dropped
    assert batch == 4 and any("3 of 15" in n for n in notes)


def test_cpu_threads_leave_room_for_loader_workers(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    cores = len(os.sched_getaffinity(0))
    assert trainer.cpu_threads(0, 1) == max(1, cores // 2 - 1)
    assert trainer.cpu_threads(3, 1) == 3  # asked for explicitly
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert trainer.cpu_threads(0, 0) is None  # the user's (or torchrun's) setting stands


def test_a_one_process_launch_joins_a_process_group(monkeypatch):
    # As MoCo's launcher: `torchrun --nproc_per_node 1` runs DDP over a group of one (gloo here, NCCL on a GPU).
    import socket

    import torch.distributed as dist

    from pretrain.processes import init_processes

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    from pretrain.methods.hard_views import HardViewConfig
    from pretrain.methods.moco import MoCo, MocoConfig

    torch.manual_seed(0)
    moco = MoCo(MocoConfig(queue_size=16, hidden_dim=32), HardViewConfig(), "resnet10t", 64)
    x = torch.rand(8, 3, 32, 32)

    def keys():
        torch.manual_seed(1)
        return moco._keys(x)

    alone = keys()
    procs, created = init_processes()
    try:
        assert created and procs.distributed and procs.world_size == 1 and dist.get_backend() == "gloo"
        # a group of one still splits the key batch for shuffle BN, as one process does
        assert torch.equal(keys(), alone)
    finally:
        dist.destroy_process_group()
    for key in ("WORLD_SIZE", "MASTER_ADDR"):  # a plain launch stays a single process
        monkeypatch.delenv(key)
    procs, created = init_processes()
    assert not created and not procs.distributed and not dist.is_initialized()


# ------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("pipeline", ["cpu", "gpu"])  # gpu: colour and blur batched on the device (here the CPU)
def test_killed_run_resumes_exactly(tmp_path, pipeline):
    data = make_images(tmp_path / "imgs", 24)
    ref_out, cut_out = tmp_path / "ref", tmp_path / "cut"
    reference = trainer.train(tiny_cfg(data, ref_out, pipeline))  # 3 steps per epoch, 6 in all

    # The same run in a subprocess, slowed down, killed by SIGKILL once the step-2 checkpoint exists.
    proc = subprocess.Popen([PY, __file__, "slow-run", str(data), str(cut_out), pipeline], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = cut_out / "checkpoints" / checkpoint_name(0, 2)
    deadline = time.time() + 60
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert checkpoint_name(2, 0) not in [p.name for p in list_checkpoints(cut_out)]

    with pytest.raises(HexaError, match="already holds checkpoints"):  # a fresh run never mixes into an old one
        trainer.train(tiny_cfg(data, cut_out, pipeline))
    with pytest.raises(HexaError, match="limit_images=0, this run asks for limit_images=20"):
        trainer.train(tiny_cfg(data, cut_out, pipeline, limit_images=20), resume="auto")  # other data: not a resume
    resumed = trainer.train(tiny_cfg(data, cut_out, pipeline), resume="auto")
    ref_rows, cut_rows = csv_rows(ref_out), csv_rows(cut_out)
    assert [r["step"] for r in cut_rows] == [str(s) for s in range(1, 7)]
    for key in ("loss", "loss_clean", "lr"):
        assert [r[key] for r in cut_rows] == [r[key] for r in ref_rows], key
    assert all(0 <= float(r["data_wait"]) <= 1 for r in cut_rows)  # the measured data-wait fraction
    assert resumed.final_logs["loss"] == reference.final_logs["loss"]
    ref_model, cut_model = newest_model(ref_out), newest_model(cut_out)
    assert ref_model.keys() == cut_model.keys()
    assert all(torch.equal(ref_model[k], cut_model[k]) for k in ref_model)


class _Crash(Exception):
    pass


def test_deepcluster_crash_mid_epoch_resumes_exactly(tmp_path):
    """DeepCluster's state (memory bank, k-means assignments, prototypes, LARC momentum) resumes exactly."""
    data = make_images(tmp_path / "imgs", 16)

    def cfg_for(out):
        base = tiny_cfg(data, out, checkpoint_every_steps=1)
        return dataclasses.replace(
            base, method="hexa_dcluster", epochs=3, optimizer="lars", lr=4.8, lr_reference_batch=8,
            schedule_unit="step", warmup_epochs=1, warmup_start_lr=0.3, final_lr=0.0048,
            augment=dataclasses.replace(base.augment, crop_sizes=(32, 16), crop_counts=(2, 1)),
            deepcluster=dataclasses.replace(base.deepcluster, nmb_prototypes=(5, 4), hidden_mlp=64,
                                            freeze_prototypes_epochs=0.5))

    reference = trainer.train(cfg_for(tmp_path / "ref"))  # epoch 1 fills the bank, epochs 2-3 train

    def crashing(cfg, size, steps_per_epoch):  # dies on the 4th step: epoch 2, after its k-means, one batch in
        method, calls = build_method(cfg, size, steps_per_epoch), []
        step = method.training_step

        def training_step(*args, **kwargs):
            calls.append(1)
            if len(calls) == 4:
                raise _Crash
            return step(*args, **kwargs)

        method.training_step = training_step
        return method

    with pytest.raises(_Crash):
        trainer.train(cfg_for(tmp_path / "cut"), method_factory=crashing)
    resumed = trainer.train(cfg_for(tmp_path / "cut"), resume="auto")
    ref_rows, cut_rows = csv_rows(tmp_path / "ref"), csv_rows(tmp_path / "cut")
    assert [r["step"] for r in cut_rows] == [str(s) for s in range(1, 7)]
    for key in ("loss", "loss_clean", "loss_adv", "loss_cutmix", "lr"):
        assert [r[key] for r in cut_rows] == [r[key] for r in ref_rows], key
    assert float(ref_rows[-1]["loss_clean"]) > 0  # it trained, not only filled the bank
    assert resumed.final_logs["loss"] == reference.final_logs["loss"]
    ref_model, cut_model = newest_model(tmp_path / "ref"), newest_model(tmp_path / "cut")
    assert all(torch.equal(ref_model[k], cut_model[k]) for k in ref_model)


def test_cli_run_loss_goes_down_and_published_weights_load_through_timm(tmp_path, capsys):
    import timm

    import hexa_zoo  # noqa: F401  (registers the model names)
    from pretrain.cli import main

    data = make_images(tmp_path / "imgs", 16)
    out = tmp_path / "run"
    # Mild augmentation and a fast key encoder, so 24 steps visibly learn to tell 16 images apart.
    sets = [*TINY, "lr=3.0", "publish=true", "tag=embedded", "checkpoint_every_steps=0", "keep_checkpoints=1",
            "moco.momentum=0.9", "augment.crop_scale=[0.6,1.0]", "augment.color_jitter_p=0",
            "augment.grayscale_p=0", "augment.blur_p=0"]
    argv = ["--method", "moco_v2", "--arch", "resnet18", "--data", str(data), "--out", str(out), "--epochs", "12",
            "--batch-size", "8", "--seed", "3"] + [arg for kv in sets for arg in ("--set", kv)]
    assert main(argv) == 0
    assert "published moco_v2_r18.embedded" in capsys.readouterr().out
    losses = [float(r["loss"]) for r in csv_rows(out)]
    assert len(losses) == 24
    # Step 1 scores against the random initial queue (an easy, meaningless loss); from step 2 on the
    # queue holds real keys, and chance level is ln(1 + 8 negatives) = 2.2.
    # (The start is checked at step 2 alone: this seed's run learns so fast that steps 2-6 average 1.38.)
    assert losses[1] > 1.4 and np.mean(losses[-6:]) < np.mean(losses[1:6]) - 0.25, losses

    model = timm.create_model("moco_v2_r18.embedded", pretrained=True)
    trained = newest_model(out)
    published = model.state_dict()
    assert all(torch.equal(published[k], trained["encoder_q.trunk." + k]) for k in published)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    data = make_images(tmp_path / "imgs", 24)
    made = []

    def poisoned(cfg, size, steps_per_epoch):
        method = build_method(cfg, size, steps_per_epoch)
        clean_step, calls = method.training_step, []

        def step(views, index, backward, loss_scale):
            calls.append(1)
            logs = clean_step(views, index, backward, loss_scale)
            return dict(logs, loss=float("nan")) if len(calls) == 4 else logs

        method.training_step = step
        made.append(method)
        return method

    cfg = tiny_cfg(data, tmp_path / "run", checkpoint_every_steps=1)
    with pytest.raises(TrainingDivergedError, match=r"loss is not finite \(loss=nan\) at epoch 2, step 4") as err:
        trainer.train(cfg, method_factory=poisoned)
    assert "checkpoint_e00001_b0000000.pt" in str(err.value) and "--resume auto" in str(err.value)
    kept = list_checkpoints(tmp_path / "run")
    assert kept[-1].name == checkpoint_name(1, 0)  # step 3 = end of epoch 1; nothing after
    state = torch.load(kept[-1], map_location="cpu", weights_only=True)["model"]
    params = dict(made[0].named_parameters())  # BN buffers did see the NaN step's forward; weights must not
    assert all(torch.equal(state[k], p) for k, p in params.items() if k.startswith("encoder_q."))


@pytest.mark.parametrize("pipeline", ["cpu", "gpu"])
def test_corrupt_image_is_skipped_counted_and_reported(tmp_path, caplog, pipeline):
    data = make_images(tmp_path / "imgs", 9)
    (data / "c0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    cfg = tiny_cfg(data, tmp_path / "run", pipeline, batch_size=5, checkpoint_every_steps=0, tensorboard=True)
    with caplog.at_level("INFO", logger="pretrain"):
        result = trainer.train(cfg)
    assert result.final_logs["bad_images"] == 2  # 10 images, 2 batches of 5 per epoch: seen once per epoch
    rows = csv_rows(tmp_path / "run")
    assert len(rows) == 4 and all(float(r["img_per_s"]) > 0 for r in rows)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb")).Reload()
    assert [e.value for e in events.Scalars("loss/loss")] == pytest.approx([float(r["loss"]) for r in rows])
    assert {"loss/loss_clean", "train/lr", "train/img_per_s", "train/data_wait"} <= set(events.Tags()["scalars"])
    assert "broken.png" in (tmp_path / "run" / "bad_images.txt").read_text()
    assert sum("skipped 1 unreadable image" in r.getMessage() for r in caplog.records) == 2
    assert sum("waited for data" in r.getMessage() for r in caplog.records) == 2  # each epoch's line


def test_two_processes_on_gloo_stay_in_sync(tmp_path):
    data = make_images(tmp_path / "imgs", 16)
    for name in ("bad1.png", "bad2.png"):  # short batches must be evened out across processes, not hang
        (data / "c1" / name).write_bytes(b"not an image")
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          __file__, "ddp-run", str(data), str(out)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 4  # 18 files, 9 per process, batch 4 each, 2 epochs
    assert ranks[0]["bad_images"] == ranks[1]["bad_images"] > 0  # counted over both processes
    before = torch.load(out / "rank0_init.pt", weights_only=True)
    moved = 0
    for key, value in ranks[0]["model"].items():
        if "running_" in key or "num_batches_tracked" in key:
            continue  # BN statistics are per process (DDP broadcasts rank 0's before each forward, as official)
        assert torch.equal(value, ranks[1]["model"][key]), key  # weights, key encoder, queue
        moved += key.startswith("encoder_q.") and not torch.equal(value, before[key])
    assert moved > 0


# ------------------------------------------------------------------------------- subprocess drivers
def _slow_run(data: str, out: str, pipeline: str) -> None:
    """The resume test's run, slowed so the parent can kill it mid-epoch."""
    def slow(cfg, size, steps_per_epoch):
        method = build_method(cfg, size, steps_per_epoch)
        end = method.on_step_end
        method.on_step_end = lambda: (end(), time.sleep(0.4))
        return method

    trainer.train(tiny_cfg(Path(data), Path(out), pipeline), method_factory=slow)


def _ddp_run(data: str, out: str) -> None:
    """Under torchrun: a few steps on gloo, then each rank saves what it ended with."""
    initial = {}

    def remember(cfg, size, steps_per_epoch):
        method = build_method(cfg, size, steps_per_epoch)
        initial.update({k: v.clone() for k, v in method.state_dict().items()})
        return method

    cfg = tiny_cfg(Path(data), Path(out), arch="resnet10t", batch_size=8, checkpoint_every_steps=0)
    holder = {}
    original = trainer._Run.fit

    def fit(run):
        holder["run"] = run
        return original(run)

    trainer._Run.fit = fit
    result = trainer.train(cfg, method_factory=remember)
    rank = int(os.environ["RANK"])
    torch.save({"model": holder["run"].method.state_dict(), "steps": result.final_logs["steps"],
                "bad_images": result.final_logs["bad_images"]},
               Path(out) / f"rank{rank}.pt")
    if rank == 0:
        torch.save(initial, Path(out) / "rank0_init.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)  # as the _one_thread fixture
    {"slow-run": _slow_run, "ddp-run": _ddp_run}[sys.argv[1]](*sys.argv[2:])
