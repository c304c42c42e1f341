"""The detectron2 backend of `hexa transfer detection`: MoCo's own detection pipeline, run or handed off.

It writes, into `<out>/detectron2-<model>/`:

- `trunk.pkl`: the trunk in detectron2's names (`hexa_zoo.convert.to_detectron2`, MoCo's
  convert-pretrain-to-detectron2.py renaming);
- `config.yaml`: MoCo's `pascal_voc_R_50_C4_24k_moco.yaml` with its bases merged in (R50-C4,
  naiveSyncBN, FREEZE_AT 0, Res5ROIHeadsExtraNorm, RGB input with the model's mean/std, STRIDE_IN_1X1
  False, precise BN), the schedule and sizes taken from the preset, and datasets registered by path;
- `train_net.py`: MoCo's train_net.py in our words (registers `Res5ROIHeadsExtraNorm` and the datasets,
  evaluates with PascalVOCDetectionEvaluator / COCOEvaluator) that also saves the final metrics as JSON.

With detectron2 importable it runs them and writes a record from the metrics detectron2 reports. Without
it, it prints the exact command to run elsewhere and writes no record: a record only holds what ran.
"""

from __future__ import annotations

import json
import logging
import pickle
import shlex
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import yaml

from hexa_zoo.convert import to_detectron2
from hexa_zoo.errors import ConfigError, DataError
from hexa_zoo.fileio import atomic_write_bytes, atomic_write_text

from ...readers.detection import find_devkit, load_detection_data
from .config import benchmark_for

log = logging.getLogger(__name__)

RESULTS_FILE = "hexa_results.json"

TRAIN_NET = '''\
"""detectron2 training for hexa-zoo's detection transfer (MoCo detection/train_net.py, same behaviour).

Written by `hexa transfer detection --set backend=detectron2`; run with the command it printed.
"""
import json
import os
from pathlib import Path

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data.datasets import register_coco_instances, register_pascal_voc
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
from detectron2.layers import get_norm
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads
from detectron2.utils import comm

HERE = Path(__file__).resolve().parent


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """Res5ROIHeads with one more normalisation layer after res5 (the MoCo paper's extra BN)."""

    def __init__(self, cfg, input_shape):
        super().__init__(cfg, input_shape)
        self.res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, self.res5[-1].out_channels))


def register_datasets():
    spec = json.loads((HERE / "datasets.json").read_text())
    for name, d in spec.items():
        if d["format"] == "voc":
            register_pascal_voc(name, d["dirname"], d["split"], int(d["year"]), d["classes"])
        else:
            register_coco_instances(name, {}, d["json"], d["image_root"])


class Trainer(DefaultTrainer):
    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if "coco" in dataset_name:
            return COCOEvaluator(dataset_name, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"))
        return PascalVOCDetectionEvaluator(dataset_name)


def main(args):
    register_datasets()
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
        results = getattr(trainer, "_last_eval_results", None)
    if comm.is_main_process() and results:
        path = Path(cfg.OUTPUT_DIR) / "%(results)s"
        path.write_text(json.dumps({k: dict(v) for k, v in results.items()}, indent=2, default=float))
    return results


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
''' % {"results": RESULTS_FILE}


def detectron2_available() -> bool:
    return find_spec("detectron2") is not None


def resnet_depth(arch: str) -> int:
    """50 for resnet50; detectron2's Res5ROIHeads builds bottleneck blocks, so C4 needs depth >= 50."""
    base = arch.split(".")[0]
    if not base.startswith("resnet") or not base[6:].isdigit():
        raise ConfigError(f"the detectron2 backend needs a plain ResNet trunk, not {arch!r}",
                          "use a resnet50/resnet101 model, or backend=torchvision")
    return int(base[6:])


def dataset_spec(root: Path, cfg) -> tuple[dict, list[str], list[str], int]:
    """datasets.json entries (registered by path in train_net.py), train and test names, class count."""
    data = load_detection_data(root, cfg)  # validates the files before anything is handed off
    spec = {}
    if data.format == "voc":
        devkit = find_devkit(root)
        names = []
        for s in (*cfg.voc_train, cfg.voc_test):
            year, split = s.split(":")
            name = f"hexa_voc_{year}_{split}"
            spec[name] = {"format": "voc", "dirname": str(devkit / f"VOC{year}"), "split": split,
                          "year": int(year), "classes": list(data.classes)}
            names.append(name)
        return spec, names[:-1], names[-1:], len(data.classes)
    coco_root = root / "coco" if not (root / "annotations").is_dir() and (root / "coco").is_dir() else root
    for split in (cfg.coco_train, cfg.coco_test):
        spec[f"hexa_coco_{split}"] = {"format": "coco", "image_root": str(coco_root / split),
                                      "json": str(coco_root / "annotations" / f"instances_{split}.json")}
    return spec, [f"hexa_coco_{cfg.coco_train}"], [f"hexa_coco_{cfg.coco_test}"], len(data.classes)


def detectron2_config(cfg, *, depth: int, num_classes: int, weights: Path, mean, std, train: list[str],
                      test: list[str], output_dir: Path, seed: int) -> dict:
    """MoCo's detectron2 config (Base-RCNN-C4-BN + pascal_voc_R_50_C4_24k[_moco]) with the preset's schedule."""
    model = {
        "META_ARCHITECTURE": "GeneralizedRCNN",
        "DEVICE": "cuda" if cfg.gpus > 0 else "cpu",  # gpus=0: a CPU run (slow; for checking the pipeline)
        "WEIGHTS": str(weights),
        "MASK_ON": bool(cfg.masks),
        "PIXEL_MEAN": [round(255.0 * m, 3) for m in mean],
        "PIXEL_STD": [round(255.0 * s, 3) for s in std],
        "BACKBONE": {"FREEZE_AT": 0},
        "RESNETS": {"DEPTH": depth, "NORM": "naiveSyncBN", "STRIDE_IN_1X1": False},
        "RPN": {"PRE_NMS_TOPK_TRAIN": cfg.rpn_pre_nms_top_n_train, "POST_NMS_TOPK_TRAIN": cfg.rpn_post_nms_top_n_train,
                "PRE_NMS_TOPK_TEST": cfg.rpn_pre_nms_top_n_test, "POST_NMS_TOPK_TEST": cfg.rpn_post_nms_top_n_test},
        "ROI_HEADS": {"NAME": "Res5ROIHeadsExtraNorm", "NUM_CLASSES": num_classes,
                      "BATCH_SIZE_PER_IMAGE": cfg.box_batch_size_per_image},
        "ROI_BOX_HEAD": {"POOLER_RESOLUTION": cfg.roi_resolution},
    }
    if depth < 50:  # detectron2 builds R18/R34 only with 64 res2 channels
        model["RESNETS"]["RES2_OUT_CHANNELS"] = 64
    if cfg.layout == "fpn":  # detectron2's Base-RCNN-FPN.yaml, with the same SyncBN trunk
        model["BACKBONE"]["NAME"] = "build_resnet_fpn_backbone"
        model["RESNETS"]["OUT_FEATURES"] = ["res2", "res3", "res4", "res5"]
        model["FPN"] = {"IN_FEATURES": ["res2", "res3", "res4", "res5"]}
        model["ANCHOR_GENERATOR"] = {"SIZES": [[32], [64], [128], [256], [512]], "ASPECT_RATIOS": [[0.5, 1.0, 2.0]]}
        model["RPN"].update({"IN_FEATURES": ["p2", "p3", "p4", "p5", "p6"]})
        model["ROI_HEADS"].update({"NAME": "StandardROIHeads", "IN_FEATURES": ["p2", "p3", "p4", "p5"]})
        model["ROI_BOX_HEAD"] = {"NAME": "FastRCNNConvFCHead", "NUM_FC": 2, "POOLER_RESOLUTION": 7}  # FPN's own
        model["ROI_MASK_HEAD"] = {"NAME": "MaskRCNNConvUpsampleHead", "NUM_CONV": 4, "POOLER_RESOLUTION": 14}
    return {
        "MODEL": model,
        "INPUT": {"MIN_SIZE_TRAIN": list(cfg.min_size_train), "MIN_SIZE_TEST": cfg.min_size_test,
                  "MAX_SIZE_TRAIN": cfg.max_size, "MAX_SIZE_TEST": cfg.max_size, "FORMAT": "RGB"},
        "DATASETS": {"TRAIN": list(train), "TEST": list(test)},
        "SOLVER": {"IMS_PER_BATCH": cfg.batch_size, "BASE_LR": cfg.base_lr, "MOMENTUM": cfg.momentum,
                   "WEIGHT_DECAY": cfg.weight_decay, "WEIGHT_DECAY_NORM": cfg.weight_decay_norm,
                   "STEPS": list(cfg.steps), "GAMMA": cfg.gamma, "MAX_ITER": cfg.max_iter,
                   "WARMUP_ITERS": cfg.warmup_iters, "WARMUP_FACTOR": cfg.warmup_factor},
        "TEST": {"PRECISE_BN": {"ENABLED": cfg.precise_bn_iters > 0, "NUM_ITER": max(cfg.precise_bn_iters, 1)}},
        "DATALOADER": {"NUM_WORKERS": cfg.workers},
        "OUTPUT_DIR": str(output_dir),
        "SEED": seed,
        "VERSION": 2,
    }


def prepare(trunk, info: dict, root: Path, cfg, out: Path, *, seed: int) -> tuple[Path, list[list[str]], str]:
    """Write trunk.pkl, config.yaml, datasets.json and train_net.py.

    Returns the folder, one command per run, and the data format ("voc" or "coco").
    """
    arch = info.get("arch") or "resnet50"
    depth = resnet_depth(arch)
    if cfg.layout == "c4" and depth < 50:
        raise ConfigError(f"detectron2's C4 head (Res5ROIHeads) is built from bottleneck blocks; {arch} has none",
                          "use a resnet50/resnet101 trunk, layout=fpn, or backend=torchvision")
    spec, train, test, num_classes = dataset_spec(root, cfg)
    name = str(info.get("name") or "model").replace("/", "_")
    folder = out / f"detectron2-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "trunk.pkl"
    atomic_write_bytes(weights, pickle.dumps(to_detectron2(trunk.state_dict()), protocol=4))
    atomic_write_text(folder / "datasets.json", json.dumps(spec, indent=2) + "\n")
    atomic_write_text(folder / "train_net.py", TRAIN_NET)
    commands = []
    for r in range(cfg.runs):
        config = detectron2_config(cfg, depth=depth, num_classes=num_classes, weights=weights, mean=info["mean"],
                                   std=info["std"], train=train, test=test, output_dir=folder / f"run{r}",
                                   seed=seed + r)
        path = folder / ("config.yaml" if cfg.runs == 1 else f"config_run{r}.yaml")
        atomic_write_text(path, "# MoCo detection protocol (facebookresearch/moco detection/configs), "
                                "written by hexa transfer detection\n" + yaml.safe_dump(config, sort_keys=False))
        commands.append([sys.executable, str(folder / "train_net.py"), "--config-file", str(path),
                         "--num-gpus", str(cfg.gpus)])
    return folder, commands, next(iter(spec.values()))["format"]


def run(protocol_run, out: Path) -> dict | None:
    """Prepare the detectron2 files; run them if detectron2 is importable (record), else print the command.

    `protocol_run` is the protocol's `transfer.runner.ProtocolRun` (config, trunk, seed, data root, clock).
    """
    cfg, seed, root = protocol_run.cfg, protocol_run.seed, protocol_run.root
    folder, commands, data_format = prepare(protocol_run.trunk, protocol_run.info, root, cfg, out, seed=seed)
    shown = "\n".join("  " + " ".join(shlex.quote(c) for c in cmd) for cmd in commands)
    if not detectron2_available():
        print(f"detectron2 is not installed here, so nothing was trained and no result record was written.\n"
              f"The trunk, the MoCo-protocol config and a train script are in {folder}.\n"
              f"On a machine with detectron2 (and {cfg.gpus} GPU(s)), run:\n{shown}\n"
              f"Each run writes its metrics to <OUTPUT_DIR>/{RESULTS_FILE}.")
        return None
    metrics: dict[str, list[float]] = {}
    notes = [f"backend detectron2, files in {folder}"]
    for r, cmd in enumerate(commands):
        log.info("running %s", " ".join(cmd))
        done = subprocess.run(cmd)
        result_file = folder / f"run{r}" / RESULTS_FILE
        if done.returncode != 0 or not result_file.is_file():
            raise DataError(f"detectron2 run {r + 1} failed (exit {done.returncode}); see {folder / f'run{r}'}",
                            f"rerun by hand:\n{shown}")
        results = json.loads(result_file.read_text())
        box = results["bbox"]
        if data_format == "coco":
            values = {"APbb": box["AP"], "APbb50": box["AP50"], "APbb75": box["AP75"]}
            if "segm" in results:
                values["APmk"] = results["segm"]["AP"]
        else:
            values = {"AP50": box["AP50"], "AP": box["AP"], "AP75": box["AP75"]}
        for k, v in values.items():
            metrics.setdefault(k, []).append(float(v))
        notes.append(f"run {r + 1} (seed {seed + r}): " + ", ".join(f"{k} {v:.2f}" for k, v in values.items()))
    data = load_detection_data(root, cfg)
    protocol_run.use_data(root, data.files, fingerprint_root=root, format=data.format, classes=data.classes,
                 train_images=len(data.train), test_images=len(data.test))
    return protocol_run.finish(benchmark_for(protocol_run.data_spec, data.format, cfg, protocol_run.info.get("arch") or ""),
                               out, metrics, notes=notes)
