"""Pre-training recipes: one frozen dataclass, loaded from YAML with `--set key=value` overrides.

    cfg = load_recipe("moco_v2_r18_embedded", ["epochs=2", "moco.queue_size=1024"])

A recipe is either a name from `pretrain/configs/` (without `.yaml`) or the path of a YAML file. A recipe
may start from another one: `base: moco_v2_r50_200ep` takes that recipe's values, and the file's own
values replace them (every HEXA recipe is its baseline's plus `method` and `hard_views`). Values apply in
the order: dataclass defaults, base recipe(s), recipe file, overrides.

Learning rates are given for a reference batch (`lr_reference_batch`) and scaled linearly with the
global batch, `lr * batch_size / lr_reference_batch`, as MoCo does (lr 0.03 at 256). swav's scripts
state lr 4.8 for their batch of 4096, so its recipes say reference 4096. `batch_size` is the *global*
batch, split evenly across the processes of a torchrun job.

The method's own settings live in the section named after its module in the catalog (`moco:`,
`deepcluster:`, `swav:`); `hard_views:` holds HEXA's views, switched on exactly for the catalog's HEXA
methods (`hard_views.enabled` follows `method`). A saved `config.yaml` holds only the section of the
method that ran, after the trainer fitted its sizes to the data, so it reloads into that very run.

A run shorter (or longer) than its recipe keeps the shape of the recipe's schedule: values counted in
epochs (warm-up, the prototype freeze, the start of SwAV's queue) scale with `epochs` unless they are
overridden too; one log line says so.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import yaml

from hexa_zoo.catalog import EMBEDDED_TAG, FAMILIES, METHODS, Method
from hexa_zoo.config import from_dict, merge, parse_overrides, to_dict
from hexa_zoo.errors import ConfigError

from .data.augment import AugmentConfig
from .loop.monitor import MonitorConfig
from .methods.deepcluster import DeepClusterConfig, DeepClusterV2
from .methods.hard_views import HardViewConfig
from .methods.method import PseudoLabelMethod
from .methods.moco import MoCo, MocoConfig
from .methods.swav import SwAV, SwavConfig

RECIPE_DIR = Path(__file__).resolve().parent / "configs"
# Each family of the catalog (hexa_zoo.catalog.FAMILIES, a test holds them equal) and the class that implements
# it; its settings are PretrainConfig's section of the same name.
METHOD_CLASSES: dict[str, type[PseudoLabelMethod]] = {"moco": MoCo, "deepcluster": DeepClusterV2, "swav": SwAV}
log = logging.getLogger("pretrain")


@dataclass(frozen=True)
class PretrainConfig:
    """Everything a pre-training run needs; saved as `config.yaml` beside its checkpoints."""

    method: str = "moco_v2"                # a method of the catalog (hexa_zoo.catalog.METHODS)
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
    monitor: MonitorConfig = field(default_factory=MonitorConfig)  # online kNN every N epochs (pretrain/loop/monitor.py)

    # Machinery
    workers: int = 4                       # DataLoader worker processes per training process
    threads: int = 0                       # CPU only: torch threads per process; 0: cores / processes - workers,
                                           # unless OMP_NUM_THREADS is set (torchrun sets it to 1)
    amp: bool = True                       # CUDA: autocast in amp_dtype; the CPU is fp32 unless amp_dtype is bfloat16
    amp_dtype: str = "float16"             # float16 (with GradScaler) or bfloat16 (no loss scale; CPU too); a
                                           # switch for the GPU check to measure (bench/pretrain_step.py --precision)
    channels_last: bool = True             # CUDA only
    compile: bool = False                  # torch.compile of the trunk(s) (pretrain/methods/method.py: compile_trunks); off
                                           # until bench/pretrain_step.py --compile measures it faster on a GPU
    compile_mode: str = "default"          # torch.compile's mode: default, reduce-overhead (CUDA graphs), max-autotune
    compile_backend: str = "inductor"      # torch.compile's backend; aot_eager traces without compiling (fast, CPU)
    checkpoint_every_steps: int = 1000     # also at the end of every epoch; 0 = only at epoch ends
    keep_checkpoints: int = 2              # newest checkpoints kept in out/checkpoints
    log_every_steps: int = 10              # CSV + TensorBoard rows
    tensorboard: bool = True
    progress: bool = True                  # tqdm bar on rank 0
    seed: int = 0

    # Publishing the trunk to the local zoo at the end
    publish: bool = True
    tag: str = ""                          # zoo tag; empty: what ran ("embedded", else "<data name>_ep<epochs>")
    zoo: str = ""                          # zoo folder; empty: HEXA_ZOO_HOME (default ~/.cache/hexa_zoo)
    description: str = ""                  # first line of the model card
    overwrite: bool = False                # replace another run's zoo folder of the same name.tag (else refused
                                           # before the first step); a resumed run replaces its own anyway

    hard_views: HardViewConfig = field(default_factory=HardViewConfig)  # `enabled` follows the method

    # The method's own settings, one typed section per family of the catalog (hexa_zoo.catalog.FAMILIES; a test
    # holds them equal): only the section of the method's module is used (and saved)
    moco: MocoConfig = field(default_factory=MocoConfig)
    deepcluster: DeepClusterConfig = field(default_factory=DeepClusterConfig)
    swav: SwavConfig = field(default_factory=SwavConfig)

    # Not a setting (never saved): the epochs of the method's embedded recipe, read once by `load_recipe`, so
    # that `resolved_tag` claims "embedded" only for that recipe as it is. 0 (a config built by hand): no claim.
    embedded_recipe_epochs: int = 0

    def __post_init__(self) -> None:
        if self.hard_views.enabled != catalog_entry(self.method).is_hexa:  # the method decides: HEXA variants have the views
            object.__setattr__(self, "hard_views", dataclasses.replace(self.hard_views, enabled=self.entry.is_hexa))

    @property
    def entry(self) -> Method:
        """The method's catalog entry."""
        return METHODS[self.method]

    @property
    def family(self) -> str:
        """The method's family (pretrain/methods/<family>.py), also its config section's name."""
        return self.entry.module

    @property
    def method_class(self) -> type[PseudoLabelMethod]:
        """The class implementing `method` (METHOD_CLASSES)."""
        return METHOD_CLASSES[self.family]

    @property
    def is_hexa(self) -> bool:
        return self.entry.is_hexa

    def method_config(self):
        """The method's own section (MocoConfig, DeepClusterConfig or SwavConfig)."""
        return getattr(self, self.family)

    def resolved_tag(self) -> str:
        """The zoo tag the run publishes under: `tag`, else one that says what ran, never a recipe's claim.

        On the embedded data: "embedded" for the method's embedded recipe as it is, else
        "embedded_ep<epochs>" (a 1-epoch run must not take the place of the recipe's weights); on a
        folder "<data name>_ep<epochs>"; either with "_img<N>" for a seeded subset (limit_images).
        """
        if self.tag:
            return self.tag
        subset = f"_img{self.limit_images}" if self.limit_images > 0 else ""
        if self.data != EMBEDDED_TAG:
            return f"{data_name(self.data)}_ep{self.epochs}{subset}"
        as_recipe = self.epochs == self.embedded_recipe_epochs and not subset
        return EMBEDDED_TAG if as_recipe else f"{EMBEDDED_TAG}_ep{self.epochs}{subset}"

    def scaled(self, lr: float) -> float:
        """A learning rate of the recipe, scaled linearly to this run's global batch."""
        return lr * self.batch_size / self.lr_reference_batch

    def to_dict(self) -> dict:
        """The configuration as saved: every setting, and of the method sections only this method's."""
        data = to_dict(self)
        for section in FAMILIES:
            if section != self.family:
                data.pop(section)
        data.pop("embedded_recipe_epochs")  # what load_recipe read, not a setting
        return data

    def fitted(self, dataset_size: int, world_size: int, steps_per_epoch: int) -> tuple[PretrainConfig, list[str]]:
        """This config with the method's sizes fitted to the data (what config.yaml then records), one note per change."""
        section, notes = self.method_class.adapt(self.method_config(), dataset_size=dataset_size,
                                                 batch_size=self.batch_size, world_size=world_size,
                                                 steps_per_epoch=steps_per_epoch)
        return dataclasses.replace(self, **{self.family: section}), notes


def build_method(cfg: PretrainConfig, dataset_size: int, steps_per_epoch: int = 1) -> PseudoLabelMethod:
    """The method object of `cfg.method`, with hard views exactly for the HEXA methods."""
    return cfg.method_class(cfg.method_config(), cfg.hard_views, cfg.arch, dataset_size=dataset_size,
                            steps_per_epoch=steps_per_epoch)


def catalog_entry(method: str) -> Method:
    """The catalog entry of a method name, or a ConfigError naming the methods there are."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}", f"use one of: {', '.join(METHODS)}")
    return METHODS[method]


def data_name(data: str) -> str:
    """A tag-safe name for a data folder: its name, with the parent's for split folders (imagenet/train ->
    imagenet_train)."""
    path = Path(data).expanduser()
    parts = [path.name] if path.name.lower() not in ("train", "training", "images", "val") else [path.parent.name, path.name]
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", "_".join(p for p in parts if p)).strip("-_")
    return name or "data"


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
    return catalog_entry(method).default_recipe(data)


def read_recipe(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A recipe file's values with its `base:` chain resolved (the file's own values win)."""
    path = recipe_path(name_or_path)
    if path.resolve() in _seen:
        raise ConfigError(f"recipe {path} names itself as a base (through {', '.join(p.name for p in _seen)})",
                          "remove the loop of `base:` entries")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of settings", "see pretrain/configs/ for examples")
    base = data.pop("base", None)
    return merge(read_recipe(base, _seen + (path.resolve(),)), data) if base else data


# Values counted in epochs: a run of another length than its recipe scales them with its epochs.
SCHEDULE_IN_EPOCHS = ("warmup_epochs", "deepcluster.freeze_prototypes_epochs", "swav.freeze_prototypes_epochs",
                      "swav.queue_start_epoch")


def load_recipe(name_or_path: str | Path | None = None, overrides: Sequence[str] = ()) -> PretrainConfig:
    """Defaults, then the recipe (a name in pretrain/configs/ or a YAML path), then `key=value` overrides.

    Every recipe file it needs is read here, once: the recipe along its `base:` chain and, where the
    method's embedded recipe is another file, that one's epochs (what the zoo tag compares with).
    """
    data = to_dict(PretrainConfig())
    recipe = read_recipe(name_or_path) if name_or_path is not None else {}
    data = merge(data, recipe)
    recipe_epochs = data["epochs"]
    given = parse_overrides(overrides)
    if "embedded_recipe_epochs" in given:
        raise ConfigError("embedded_recipe_epochs is not a setting: it is read from the method's embedded recipe",
                          "drop it; set tag=NAME to choose the zoo tag")
    data = merge(data, given)
    _refuse_contradiction(data, given)
    notes = _scale_schedule(data, given, recipe_epochs)
    embedded = catalog_entry(data["method"]).recipes[EMBEDDED_TAG]
    same_file = name_or_path is not None and recipe_path(name_or_path).resolve() == recipe_path(embedded).resolve()
    data["embedded_recipe_epochs"] = (recipe if same_file else read_recipe(embedded)).get("epochs", 0)
    cfg = from_dict(PretrainConfig, data)
    validate(cfg)
    for note in notes:
        log.info("schedule follows the run's length: %s", note)
    return cfg


def _refuse_contradiction(data: dict, given: dict) -> None:
    """`hard_views.enabled` is the method's (PretrainConfig sets it): asking otherwise is an error, not a no-op."""
    entry = catalog_entry(data["method"])
    views = given.get("hard_views") if isinstance(given.get("hard_views"), dict) else {}
    tuned = sorted(k for k in views if k != "enabled")
    if tuned and not entry.is_hexa:  # a setting with no effect must not look as if it had one
        other = next((m.name for m in METHODS.values() if m.baseline == entry.name), None)
        raise ConfigError(f"hard_views.{tuned[0]} is set, but {entry.name} has no hard views: it would change nothing",
                          f"drop it, or use --method {other} (the HEXA variant)" if other else "drop it")
    asked = views.get("enabled")
    if asked is not None and bool(asked) != entry.is_hexa:
        other = (entry.baseline if entry.is_hexa else
                 next((m.name for m in METHODS.values() if m.baseline == entry.name), None))
        raise ConfigError(f"hard_views.enabled={asked} contradicts method {entry.name}: the method decides "
                          "whether the hard views are on",
                          f"use --method {other} instead" if other else "drop hard_views.enabled")


def _scale_schedule(data: dict, given: dict, recipe_epochs: int) -> list[str]:
    """Scale the values in SCHEDULE_IN_EPOCHS by epochs / recipe_epochs where not given explicitly."""
    epochs = data["epochs"]
    if not isinstance(epochs, int) or epochs == recipe_epochs or recipe_epochs <= 0:
        return []
    notes = []
    for key in SCHEDULE_IN_EPOCHS:
        *sections, name = key.split(".")
        node, asked = data, given
        for section in sections:
            node, asked = node.get(section, {}), (asked.get(section) or {}) if isinstance(asked, dict) else {}
        value = node.get(name)
        if name in asked or not value or (sections and sections[0] != METHODS[data["method"]].module):
            continue
        node[name] = round(float(value) * epochs / recipe_epochs, 6)
        notes.append(f"{key} {value} -> {node[name]} for {epochs} instead of the recipe's {recipe_epochs} epochs")
    return notes


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
