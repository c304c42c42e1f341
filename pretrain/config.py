"""Pre-training recipes: one frozen dataclass, loaded from YAML with `--set key=value` overrides.

    cfg = load_recipe("moco_v2_r18_embedded", ["epochs=2", "moco.queue_size=1024"])

A recipe is either a name from `pretrain/configs/` (without `.yaml`) or the path of a YAML file.
Values apply in the order: dataclass defaults, recipe file, overrides.

Learning rates are given for a reference batch (`lr_reference_batch`) and scaled linearly with the
global batch, `lr * batch_size / lr_reference_batch`, as MoCo does (lr 0.03 at 256). swav's
DeepCluster-v2 scripts state lr 4.8 for their batch of 4096, so its recipes say reference 4096.
`batch_size` is the *global* batch, split evenly across the processes of a torchrun job.

The method's own settings live in a nested section: `moco:` (MocoConfig) for moco_v2 / hexa_moco,
`deepcluster:` (DeepClusterConfig) for dcluster_v2 / hexa_dcluster. The method name decides
whether the hard-example views are on: `hexa_*` enables `hard_views`, the baselines disable it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from hexa_zoo.config import load_config, to_dict
from hexa_zoo.errors import ConfigError

from .augment import AugmentConfig
from .deepcluster import DeepClusterConfig
from .moco import MocoConfig

RECIPE_DIR = Path(__file__).resolve().parent / "configs"
METHODS = ("moco_v2", "hexa_moco", "dcluster_v2", "hexa_dcluster")
Method = Literal["moco_v2", "hexa_moco", "dcluster_v2", "hexa_dcluster"]


@dataclass(frozen=True)
class PretrainConfig:
    """Everything a pre-training run needs; saved as `config.yaml` beside its checkpoints."""

    method: Method = "moco_v2"
    arch: str = "resnet50"                 # any timm model name
    data: str = "embedded"                 # "embedded" or a folder (ImageFolder tree or flat folder of images)
    out: str = "runs/pretrain"
    epochs: int = 200
    batch_size: int = 256                  # global batch, over all processes
    limit_images: int = 0                  # >0: train on a seeded random subset of this many images

    # Optimisation
    optimizer: Literal["sgd", "lars"] = "sgd"  # lars = SGD wrapped in LARC (swav's apex LARC, clip=False)
    lr: float = 0.03                       # base lr at lr_reference_batch, scaled linearly with batch_size
    lr_reference_batch: int = 256
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lars_trust_coefficient: float = 0.001
    lars_clip: bool = False
    schedule: Literal["cosine", "constant"] = "cosine"
    schedule_unit: Literal["epoch", "step"] = "epoch"  # MoCo adjusts lr per epoch, swav per iteration
    warmup_epochs: float = 0.0             # linear warm-up from warmup_start_lr (DeepCluster-v2: 10 from 0.3)
    warmup_start_lr: float = 0.0           # scaled like lr
    final_lr: float = 0.0                  # cosine ends here (DeepCluster-v2: 0.0048); scaled like lr

    augment: AugmentConfig = field(default_factory=AugmentConfig)

    # Machinery
    workers: int = 4                       # DataLoader worker processes per training process
    threads: int = 0                       # CPU only: torch threads per process; 0: cores / processes - workers,
                                           # unless OMP_NUM_THREADS is set (torchrun sets it to 1)
    amp: bool = True                       # CUDA only: float16 autocast + GradScaler; CPU is always fp32
    channels_last: bool = True             # CUDA only
    checkpoint_every_steps: int = 1000     # also at the end of every epoch; 0 = only at epoch ends
    keep_checkpoints: int = 2              # newest checkpoints kept in out/checkpoints
    log_every_steps: int = 10              # CSV + TensorBoard rows
    tensorboard: bool = True
    progress: bool = True                  # tqdm bar on rank 0
    seed: int = 0

    # Publishing the trunk to the local zoo at the end
    publish: bool = True
    tag: str = ""                          # zoo tag; empty: "embedded" for --data embedded, else "ep<epochs>"
    zoo: str = ""                          # zoo folder; empty: HEXA_ZOO_HOME (default ~/.cache/hexa_zoo)
    description: str = ""                  # first line of the model card

    # The method's own settings (only the one matching `method` is used)
    moco: MocoConfig = field(default_factory=MocoConfig)
    deepcluster: DeepClusterConfig = field(default_factory=DeepClusterConfig)

    @property
    def family(self) -> Literal["moco", "deepcluster"]:
        return "moco" if self.method in ("moco_v2", "hexa_moco") else "deepcluster"

    @property
    def is_hexa(self) -> bool:
        return self.method.startswith("hexa_")

    def method_config(self):
        """The nested method config, with hard-example views switched on exactly for the HEXA methods."""
        nested = self.moco if self.family == "moco" else self.deepcluster
        hard = dataclasses.replace(nested.hard_views, enabled=self.is_hexa)
        return dataclasses.replace(nested, hard_views=hard)

    def resolved_tag(self) -> str:
        if self.tag:
            return self.tag
        return "embedded" if self.data == "embedded" else f"ep{self.epochs}"

    def scaled(self, lr: float) -> float:
        """A learning rate of the recipe, scaled linearly to this run's global batch."""
        return lr * self.batch_size / self.lr_reference_batch

    def to_dict(self) -> dict:
        return to_dict(self)


def recipe_names() -> list[str]:
    """Names of the recipes shipped in pretrain/configs/."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str | Path) -> Path:
    """The YAML file of a recipe name (`moco_v2_r50_200ep`) or an existing path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist",
                              f"pass an existing YAML file or one of: {', '.join(recipe_names())}")
        return path
    candidate = RECIPE_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise ConfigError(f"no recipe named {name_or_path!r}",
                          f"use one of: {', '.join(recipe_names())}, or the path of a YAML file")
    return candidate


def default_recipe(method: str, data: str) -> str:
    """The recipe used when none is given: the CPU-sized one on the embedded data, else the paper's."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}", f"use one of: {', '.join(METHODS)}")
    if data == "embedded":
        return {"moco_v2": "moco_v2_r18_embedded", "hexa_moco": "hexa_moco_r18_embedded",
                "dcluster_v2": "dcluster_v2_r18_embedded", "hexa_dcluster": "hexa_dcluster_r18_embedded"}[method]
    return {"moco_v2": "moco_v2_r50_200ep", "hexa_moco": "hexa_moco_r50_200ep",
            "dcluster_v2": "dcluster_v2_r50_400ep", "hexa_dcluster": "hexa_dcluster_r50_800ep"}[method]


def load_recipe(name_or_path: str | Path | None = None, overrides: Sequence[str] = ()) -> PretrainConfig:
    """Defaults, then the recipe (a name in pretrain/configs/ or a YAML path), then `key=value` overrides."""
    path = recipe_path(name_or_path) if name_or_path is not None else None
    cfg = load_config(PretrainConfig, path, overrides)
    validate(cfg)
    return cfg


def validate(cfg: PretrainConfig) -> None:
    """Reject settings that cannot train, with the fix in the message."""
    checks = [
        (cfg.epochs >= 1, f"epochs must be >= 1, got {cfg.epochs}", "set epochs=1 or more"),
        (cfg.batch_size >= 2, f"batch_size must be >= 2, got {cfg.batch_size}",
         "contrastive and clustering losses need at least two images per batch"),
        (cfg.lr > 0, f"lr must be positive, got {cfg.lr}", "set lr, e.g. lr=0.03"),
        (cfg.lr_reference_batch >= 1, "lr_reference_batch must be >= 1", "set lr_reference_batch=256"),
        (cfg.workers >= 0, "workers must be >= 0", "set workers=0 to load data in the main process"),
        (cfg.threads >= 0, "threads must be >= 0", "set threads=0 to choose from the core count"),
        (cfg.checkpoint_every_steps >= 0, "checkpoint_every_steps must be >= 0", "0 checkpoints only at epoch ends"),
        (cfg.keep_checkpoints >= 1, "keep_checkpoints must be >= 1", "keep at least the newest checkpoint"),
        (cfg.log_every_steps >= 1, "log_every_steps must be >= 1", "set log_every_steps=1 to log every step"),
        (cfg.warmup_epochs < cfg.epochs or cfg.warmup_epochs == 0,
         f"warmup_epochs ({cfg.warmup_epochs}) must be shorter than epochs ({cfg.epochs})",
         "lower warmup_epochs or raise epochs"),
    ]
    for ok, message, fix in checks:
        if not ok:
            raise ConfigError(message, fix)
