"""CUDA paths: fp16 autocast with GradScaler, channels_last, NCCL with DDP and SyncBN (skipped without a GPU).

CI has no GPU, so these run where one is lent: `python -m pytest tests/test_cuda.py`. They check that a
HEXA step under amp and channels_last tracks the same step in float32, that the trainer trains, resumes
and publishes on the GPU, and that `torchrun --nproc_per_node 1` runs the distributed code on NCCL.
"""

import copy
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pretrain.loop import trainer
from pretrain.config import build_method, load_recipe

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

REPO = Path(__file__).resolve().parents[1]
SMALL = ["workers=2", "limit_images=256", "batch_size=64", "log_every_steps=1", "tensorboard=false",
         "progress=false", "warmup_epochs=0", "checkpoint_every_steps=2"]


def recipe(method: str, out: Path | None = None, *changes: str):
    extra = [f"out={out}"] if out else []
    return load_recipe(f"{method}_r18_embedded", [*SMALL, *extra, *changes])


def make_step(method: str):
    """A HEXA method on the GPU, ready to train (DeepCluster: bank filled and clustered), and its views."""
    torch.manual_seed(0)
    cfg = recipe(method)
    dataset = 64
    cfg, _ = dataclasses.replace(cfg, batch_size=32).fitted(dataset, world_size=1, steps_per_epoch=2)
    model = build_method(cfg, dataset, steps_per_epoch=2).cuda()
    model.train()
    g = torch.Generator().manual_seed(1)
    if not cfg.method_config().multicrop:
        views = [torch.rand(32, 3, 32, 32, generator=g) for _ in range(2)]
    else:
        views = [torch.rand(32, 3, s, s, generator=g) for s, n in zip(cfg.augment.crop_sizes, cfg.augment.crop_counts)
                 for _ in range(n)]
    views = [v.cuda() for v in views]
    if cfg.family == "deepcluster":
        model.on_epoch_start(0)
        for chunk in torch.arange(dataset, device="cuda").split(32):
            model.training_step([v[: len(chunk)] for v in views], chunk, lambda loss: loss.backward())
        model.on_epoch_start(1)
    return model, views, torch.arange(32, device="cuda")


def step_grads(model, views, index, amp: bool):
    """Logs and unscaled gradients of one training step, run as the trainer runs it."""
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    fmt = torch.channels_last if amp else torch.contiguous_format
    model.to(memory_format=fmt)
    views = [v.contiguous(memory_format=fmt) for v in views]
    torch.manual_seed(7)  # the same shuffles, CutMix boxes and PGD starts in both runs
    np.random.seed(7)
    with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
        logs = model.training_step(views, index, lambda loss, **kw: scaler.scale(loss).backward(**kw))
    scale = scaler.get_scale() if amp else 1.0
    grads = torch.cat([p.grad.float().flatten() / scale for p in model.parameters() if p.grad is not None])
    return logs, grads


@pytest.mark.parametrize("method", ["hexa_moco", "hexa_dcluster"])
def test_amp_channels_last_step_tracks_the_float32_step(method):
    model, views, index = make_step(method)
    twin = copy.deepcopy(model)
    logs32, grads32 = step_grads(model, views, index, amp=False)
    logs16, grads16 = step_grads(twin, views, index, amp=True)
    assert twin.trunk.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    for key in ("loss_clean", "loss_adv", "loss_cutmix"):
        assert math.isfinite(logs16[key])
        assert logs16[key] == pytest.approx(logs32[key], rel=2e-2), key
    assert torch.isfinite(grads16).all()
    # float16 moves a few adversarial pixels' signs and some products' last digits, not the gradient:
    assert F.cosine_similarity(grads16, grads32, dim=0).item() > 0.95  # (bfloat16 on a CPU gives 0.977)
    assert (grads16.norm() / grads32.norm()).item() == pytest.approx(1.0, abs=0.1)  # unscaled as the optimizer sees it


@pytest.mark.parametrize("method", ["hexa_moco", "hexa_dcluster"])
def test_trainer_on_cuda_trains_resumes_and_publishes(tmp_path, method):
    out = tmp_path / "run"
    first = trainer.train(recipe(method, out, "epochs=2"))
    assert first.zoo_dir is not None
    ckpt = torch.load(sorted((out / "checkpoints").glob("*.pt"))[-1], map_location="cpu", weights_only=True)
    assert ckpt["scaler"]["scale"] > 0  # amp was on: the GradScaler's state is checkpointed
    resumed = trainer.train(recipe(method, out, "epochs=3"), resume="auto")
    assert resumed.final_logs["steps"] == 3 * first.final_logs["steps"] // 2
    assert all(math.isfinite(v) for k, v in resumed.final_logs.items() if k.startswith("loss"))

    from hexa_zoo.weights import load_trunk

    trunk, _ = load_trunk(resumed.zoo_dir)
    x = torch.rand(4, 3, 32, 32)
    on_cpu = trunk(x)
    trunk = trunk.cuda().to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        on_gpu = trunk(x.cuda().contiguous(memory_format=torch.channels_last)).float().cpu()
    assert (on_gpu - on_cpu.detach()).norm() / on_cpu.norm() < 2e-2  # float16 rounding, nothing more


@pytest.mark.parametrize("method", ["hexa_moco", "hexa_dcluster"])
def test_torchrun_one_gpu_uses_nccl_ddp_and_syncbn(tmp_path, method):
    out = tmp_path / "run"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                          __file__, method, str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    facts = json.loads((out / "facts.json").read_text())
    assert facts["backend"] == "nccl" and facts["ddp"]
    assert facts["sync_bn"] == (method == "hexa_dcluster")  # SyncBN in DeepCluster (swav); MoCo uses shuffle BN
    assert facts["steps"] > 0 and all(math.isfinite(v) for v in facts["losses"].values())


# ------------------------------------------------------------------------------------------ transfer

def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_features_on_cuda_match_the_cpu(r18_file):
    from hexa_zoo.embedded import embedded_root
    from transfer.common import load_model
    from transfer.readers.images import read_image_split
    from transfer.features import EvalTransform, extract_features

    model, info = load_model(str(r18_file))
    paths = read_image_split(embedded_root() / "classify", "val", max_per_class=4).paths
    tf = EvalTransform.for_model(info, 64, 64)
    on_cpu = extract_features(model, paths, tf, weights_sha256=None, device="cpu").features
    on_gpu = extract_features(model, paths, tf, weights_sha256=None, device="cuda").features  # channels_last
    in_bf16 = extract_features(model, paths, tf, weights_sha256=None, device="cuda", amp=True).features
    assert on_gpu.dtype == in_bf16.dtype == torch.float32 and on_gpu.device.type == "cpu"
    assert _relative_error(on_gpu, on_cpu) < 1e-2  # TF32 convolutions
    assert _relative_error(in_bf16, on_cpu) < 5e-2


def test_linear_and_detection_train_on_cuda_with_amp(tmp_path, r18_file):
    from test_transfer_detection import TINY as TINY_DETECTION
    from test_transfer_detection import make_tiny_voc
    from transfer.protocols import detection, linear

    record = linear.run(str(r18_file), "embedded", tmp_path, overrides=[
        "resize=32", "crop=32", "train_crop=32", "epochs=2", "milestones=[1]", "max_per_class=10", "amp=true"])
    assert all(math.isfinite(m["mean"]) for m in record["metrics"].values())
    voc = make_tiny_voc(tmp_path / "voc")
    record = detection.run(str(r18_file), str(voc), tmp_path, preset="embedded",
                           overrides=TINY_DETECTION + ["amp=true"], seed=0)
    assert set(record["metrics"]) == {"AP50", "AP", "AP75"}
    assert all(0.0 <= m["mean"] <= 100.0 for m in record["metrics"].values())


def _torchrun_driver(method: str, out: str) -> None:
    """Under torchrun: train, then record what ran (backend, DDP, SyncBN, losses)."""
    import torch.distributed as dist

    holder = {}

    def keep(cfg, size, steps_per_epoch):  # called inside the run, while its process group exists
        holder["backend"] = dist.get_backend() if dist.is_initialized() else None
        holder["method"] = build_method(cfg, size, steps_per_epoch)
        return holder["method"]

    result = trainer.train(recipe(method, Path(out), "epochs=2", "deepcluster.sync_bn=true"), method_factory=keep)
    model = holder["method"]
    facts = {"backend": holder["backend"],
             "ddp": isinstance(model.__dict__.get("_ddp"), torch.nn.parallel.DistributedDataParallel),
             "sync_bn": any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()),
             "steps": result.final_logs["steps"],
             "losses": {k: v for k, v in result.final_logs.items() if k.startswith("loss")}}
    if int(os.environ["RANK"]) == 0:
        (Path(out) / "facts.json").write_text(json.dumps(facts))


if __name__ == "__main__":
    _torchrun_driver(*sys.argv[1:])


def test_gpu_augmentation_on_cuda_matches_its_cpu_run():
    """The device side of augment.pipeline=gpu computes on the GPU what it computes on the CPU."""
    from torch.utils.data import default_collate

    from pretrain.data.augment import AugmentConfig, two_view_transform
    from pretrain.data.device_augment import finish_views
    from PIL import Image

    rng = np.random.default_rng(0)
    transform = two_view_transform(AugmentConfig(image_size=64), "gpu")
    items = []
    for i in range(16):
        torch.manual_seed(i)
        items.append(transform(Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))))
    batch = default_collate(items)
    on_cpu = finish_views(batch, torch.device("cpu"))
    on_gpu = finish_views(batch, torch.device("cuda"), torch.channels_last)
    for a, b in zip(on_cpu, on_gpu):
        assert b.is_contiguous(memory_format=torch.channels_last)
        # The blur runs in half precision on CUDA (float32 on the CPU): within half a grey level.
        assert (a - b.cpu()).abs().max().item() < 0.5 / 255


def test_auto_pipeline_times_both_paths_on_cuda_and_logs_the_device_time(tmp_path):
    """augment.pipeline=auto on CUDA: a trial of both paths, a decision with two figures, augment_ms logged."""
    import csv

    out = tmp_path / "run"
    result = trainer.train(recipe("moco_v2", out, "epochs=3", "augment.pipeline=auto",
                                  "augment.pipeline_trial_steps=3", "log_every_steps=1"))
    steps = result.final_logs["steps"]
    trial = [n for n in result.final_logs["notes"] if n.startswith("augment.pipeline=auto chose")]
    assert steps >= 6  # 256 images, batch 64, 3 epochs: 12 steps, the trial's 6 first
    assert len(trial) == 1 and "cpu " in trial[0] and "gpu " in trial[0], result.final_logs["notes"]
    ckpt = torch.load(sorted((out / "checkpoints").glob("*.pt"))[-1], map_location="cpu", weights_only=True)
    assert ckpt["pipeline_choice"]["chosen"] in ("cpu", "gpu") and len(ckpt["pipeline_choice"]["img_per_s"]) == 2
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["augment_ms"]) > 0 for r in rows if r.get("augment_ms"))
