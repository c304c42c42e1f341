"""The checkpoint layouts `hexa zoo convert --from` reads: how each release wraps its trunk, how to tell
the layouts apart by their keys, and how keys that are not torchvision's map to timm's.

Each layout was learnt from the code that writes its files (see the README's zoo section and
tests/official_architectures.py, which re-creates each one's modules):

- ``moco``: facebookresearch/moco main_moco.py (also PCL): ``{epoch, arch, state_dict, optimizer}``,
  ``module.encoder_q.*`` (fc = projection head), ``module.encoder_k.*``, ``module.queue``.
- ``moco_v3``: facebookresearch/moco-v3 main_moco.py + moco/builder.py: ``{epoch, arch, state_dict,
  optimizer, scaler}``, ``module.base_encoder.*`` (fc = 2-layer MLP projector), ``module.momentum_encoder.*``,
  ``module.predictor.*``.
- ``simsiam``: facebookresearch/simsiam: ``{epoch, arch, state_dict, optimizer}``, ``module.encoder.*``
  (fc = 3-layer projector), ``module.predictor.*``.
- ``swav`` / ``dcluster_v2``: facebookresearch/swav releases: ``module.*`` trunk, ``module.projection_head.*``,
  ``module.prototypes.*`` (DeepCluster-v2: ``prototypes.prototypes{0,1,2}``), optionally under ``state_dict``.
- ``pycontrast``: HobbitLong/PyContrast ContrastTrainer.save (InsDis, PIRL, InfoMin, its MoCo/CMC):
  ``{model, contrast, optimizer, epoch[, model_ema, amp]}``; ``model`` holds ``module.encoder.*``,
  ``module.head.*`` and, with the jigsaw branch (PIRL, InfoMin), ``module.head_jig.*``; ``contrast`` the
  memory bank or queue; ``model_ema`` the momentum copy (no ``module.``).
- ``vissl``: facebookresearch/vissl checkpoints ``{classy_state_dict: {base_model: {model: {trunk, heads}}},
  loss, phase_idx, ...}`` (or ``{model_state_dict: trunk}``) with trunk keys ``_feature_blocks.<torchvision name>``.
- ``simclr_v2``: Separius/SimCLRv2-Pytorch convert.py: ``{resnet, head}``, its own ResNet whose keys are
  ``net.<stage>.blocks.<i>.net.<j>`` (mapped to timm below); ``resnet.fc`` is the supervised head.
- ``simclr_v1``: tonylins/simclr-converter: ``{state_dict}`` of a torchvision-named ResNet with ``fc``.
- ``byol``: ajtejankar/byol-convert: a bare torchvision-named state dict with ``fc`` and no
  ``num_batches_tracked``.
- ``hexa``: this project's training checkpoints; ``timm``: a bare timm/torchvision-named trunk (Barlow Twins,
  VICReg, DINO, torchvision), with or without ``fc``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from .errors import CheckpointFormatError

if TYPE_CHECKING:  # torch is imported where tensors are read, so `hexa zoo --help` stays quick
    import torch


@dataclass(frozen=True)
class Layout:
    name: str
    what: str  # the release and its keys, for messages
    # SimCLR's TF models take pixels in [0, 1]; their conversions keep that (no mean/std normalisation).
    unnormalized_input: bool = False


_ALL = (
    Layout("moco", "MoCo (keys module.encoder_q.*, module.encoder_k.*, module.queue; v1, v2, PCL)"),
    Layout("moco_v3", "MoCo-v3 (keys module.base_encoder.*, module.momentum_encoder.*, module.predictor.*)"),
    Layout("simsiam", "SimSiam (keys module.encoder.*, module.predictor.*)"),
    Layout("swav", "SwAV release (keys module.*, module.projection_head.*, module.prototypes.weight)"),
    Layout("dcluster_v2", "DeepCluster-v2 release (keys module.*, module.prototypes.prototypes{0,1,2}.*)"),
    Layout("pycontrast", "PyContrast InsDis/PIRL/InfoMin (keys model.module.encoder.*, model.module.head*, contrast)"),
    Layout("vissl", "VISSL checkpoint (keys classy_state_dict...trunk._feature_blocks.*)"),
    Layout("simclr_v2", "SimCLR-v2 converted by Separius/SimCLRv2-Pytorch (keys resnet.net.*, head.layers.*)",
           unnormalized_input=True),
    Layout("simclr_v1", "SimCLR-v1 converted by tonylins/simclr-converter (state_dict of torchvision keys with fc)",
           unnormalized_input=True),
    Layout("byol", "BYOL converted by ajtejankar/byol-convert (torchvision keys with fc)"),
    Layout("hexa", "hexa-zoo training checkpoint (keys method, arch, model)"),
    Layout("timm", "bare trunk state dict (timm/torchvision key names)"),
)
LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in _ALL}
# Torchvision-named files: the keys alone cannot say which of these wrote them.
TORCHVISION_NAMED = ("byol", "simclr_v1", "timm")
# What `--from` accepts, and the detected layouts each choice admits.
FROM_CHOICES: dict[str, set[str]] = {"auto": set(LAYOUTS), **{name: {name} for name in LAYOUTS}}
FROM_CHOICES["swav"] = {"swav", "dcluster_v2"}  # one repository, one release format

_WRAPPER_SEGMENTS = ("classy_state_dict", "base_model", "model", "state_dict", "model_state_dict",
                     "module", "_orig_mod")  # checkpoint wrappers, DDP and torch.compile
_NOT_MODEL = ("optimizer", "optimizer_state", "scaler", "amp", "rng")  # training state, never weights


def gather_tensors(obj: Mapping, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a (nested) checkpoint dict under its dotted path, wrapper segments stripped from
    the front (``classy_state_dict.base_model.model.trunk.x`` -> ``trunk.x``, ``state_dict.module.x`` -> ``x``);
    optimizer and scaler state are left out."""
    import torch

    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if str(key) in _NOT_MODEL:
            continue
        path = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            out.setdefault(strip_wrappers(path), value)
        elif isinstance(value, Mapping):
            out.update({k: v for k, v in gather_tensors(value, path + ".").items() if k not in out})
    return out


def strip_wrappers(key: str) -> str:
    while "." in key and key.split(".", 1)[0] in _WRAPPER_SEGMENTS:
        key = key.split(".", 1)[1]
    return key


def detect(tensors: Mapping[str, torch.Tensor], top_keys=()) -> tuple[str, ...]:
    """The layouts a (wrapper-stripped) checkpoint may be in: one name, or several when keys cannot tell."""
    keys = list(tensors)

    def starts(*prefixes):
        return any(k.startswith(prefixes) for k in keys)

    if any("_feature_blocks." in k for k in keys):
        return ("vissl",)
    if any(_SIMCLR_V2_BLOCK.search(k) for k in keys):
        return ("simclr_v2",)
    if starts("base_encoder."):
        return ("moco_v3",)
    if starts("encoder_q."):
        return ("moco",)
    if starts("prototypes.prototypes"):
        return ("dcluster_v2",)
    if starts("prototypes.", "projection_head."):
        return ("swav",)
    if starts("encoder.") and starts("predictor."):
        return ("simsiam",)
    if starts("encoder.") and (starts("head.", "head_jig.", "contrast.") or "contrast" in top_keys):
        return ("pycontrast",)
    fc = tensors.get("fc.weight")
    if fc is not None and fc.ndim == 2 and "conv1.weight" in tensors:  # a classifier on a torchvision trunk
        return TORCHVISION_NAMED
    return ("timm",)


def ambiguity_error(candidates, source: str) -> CheckpointFormatError:
    names = ", ".join(candidates)
    return CheckpointFormatError(
        f"{source}: its keys fit several layouts ({names}): a torchvision-named ResNet with a classifier `fc` "
        "is what tonylins/simclr-converter (SimCLR-v1), ajtejankar/byol-convert (BYOL) and torchvision/timm "
        "supervised models all write, and they differ in input normalisation (SimCLR takes unnormalised pixels)",
        f"say which with --from ({' / '.join('--from ' + c for c in candidates)}; layout=... in Python)")


# ---------------------------------------------------------------------------------- SimCLR-v2 names

_SIMCLR_V2_BLOCK = re.compile(r"(^|\.)net\.[1-4]\.blocks\.\d+\.")
_SIMCLR_V2_STEM = re.compile(r"^(?P<p>(?:[^.]+\.)*?)net\.0\.(?P<rest>0\.weight|1\.0\.\w+)$")
_SIMCLR_V2_KEY = re.compile(r"^(?P<p>(?:[^.]+\.)*?)net\.(?P<stage>[1-4])\.blocks\.(?P<block>\d+)\.(?P<rest>.+)$")
# BottleneckBlock: projection = Projection(shortcut conv, bn = BatchNormRelu(relu=False)); net = Sequential(
# conv 1x1, BatchNormRelu, conv 3x3 (stride), BatchNormRelu, conv 1x1, BatchNormRelu(relu=False)).
_SIMCLR_V2_INNER = {"projection.shortcut.weight": "downsample.0.weight", "projection.bn.0.": "downsample.1.",
                    "net.0.weight": "conv1.weight", "net.1.0.": "bn1.", "net.2.weight": "conv2.weight",
                    "net.3.0.": "bn2.", "net.4.weight": "conv3.weight", "net.5.0.": "bn3."}


def simclr_v2_to_torchvision(key: str) -> str:
    """A SimCLRv2-Pytorch ResNet key as the torchvision/timm key of the same tensor (others unchanged)."""
    block = _SIMCLR_V2_KEY.match(key)  # first: a block's own `net.0.weight` must not pass for the stem's
    if block:
        for theirs, ours in _SIMCLR_V2_INNER.items():
            if block["rest"] == theirs or (theirs.endswith(".") and block["rest"].startswith(theirs)
                                           and block["rest"].count(".") == theirs.count(".")):
                rest = ours + block["rest"][len(theirs):]
                return f"{block['p']}layer{block['stage']}.{block['block']}.{rest}"
        return key
    stem = _SIMCLR_V2_STEM.match(key)
    if stem:  # Stem = Sequential(conv 7x7, BatchNormRelu, MaxPool)
        rest = stem["rest"]
        return stem["p"] + ("conv1.weight" if rest == "0.weight" else "bn1." + rest.rsplit(".", 1)[1])
    return key


def to_torchvision_names(tensors: dict[str, Any], layout: str) -> dict[str, Any]:
    """Rename a layout's keys to torchvision's where they differ (only SimCLR-v2's own ResNet does)."""
    if layout != "simclr_v2":
        return tensors
    return {simclr_v2_to_torchvision(k): v for k, v in tensors.items()}
