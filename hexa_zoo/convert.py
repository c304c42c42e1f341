"""Turn self-supervised checkpoints into plain trunk weights, and export them for other frameworks.

Understood inputs (detected from their keys, or named with `layout=`):

- ``moco``: the official MoCo v1/v2 files ``{epoch, arch, state_dict, optimizer}``, keys
  ``module.encoder_q.*`` (the query encoder, whose ``fc`` is the projection head), ``module.encoder_k.*``,
  ``module.queue``.
- ``swav`` / ``dcluster_v2``: the SwAV and DeepCluster-v2 releases, a bare state dict of ``module.*``
  trunk keys beside ``module.projection_head.*`` and ``module.prototypes.*`` (DeepCluster-v2:
  ``module.prototypes.prototypes{0,1,2}.*``); their training checkpoints wrap it in ``state_dict``.
- ``hexa``: this project's training checkpoints ``{"epoch", "step", "method", "arch", "config",
  "model": method.state_dict(), ...}``.
- ``timm``: a bare trunk state dict (timm and torchvision ResNets share their key names),
  including ``.safetensors`` files.

Whatever the layout, DDP's ``module.`` wrapper is stripped and the trunk found by its keys and shapes
(`trunk_finding`); files are read without running code (`checkpoint_files`).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .checkpoint_files import read_checkpoint
from .errors import CheckpointFormatError
from .fileio import atomic_save_safetensors, atomic_torch_save, atomic_write_bytes
from .trunk_finding import TRUNK_ARCHS, dropped_groups, find_trunk, trunk_template

LAYOUTS = ("moco", "swav", "dcluster_v2", "hexa", "timm")
# What `--from` accepts, and the detected layouts each choice admits.
FROM_CHOICES = {
    "auto": set(LAYOUTS),
    "moco": {"moco"},
    "swav": {"swav", "dcluster_v2"},  # one repository, one release format
    "dcluster_v2": {"dcluster_v2"},
    "hexa": {"hexa"},
    "timm": {"timm"},
}
TARGETS = ("timm", "detectron2", "torchvision")
_LAYOUT_NAMES = {
    "moco": "MoCo (keys module.encoder_q.*, module.encoder_k.*, module.queue)",
    "swav": "SwAV release (keys module.*, module.projection_head.*, module.prototypes.weight)",
    "dcluster_v2": "DeepCluster-v2 release (keys module.*, module.prototypes.prototypes{0,1,2}.*)",
    "hexa": "hexa-zoo training checkpoint (keys method, arch, model)",
    "timm": "bare trunk state dict (timm/torchvision key names)",
}
_WRAPPERS = ("module.", "_orig_mod.")  # DDP and torch.compile


@dataclass
class Converted:
    """A trunk extracted from a checkpoint, in timm key names and the template's key order."""

    state_dict: dict[str, torch.Tensor]
    arch: str
    layout: str
    prefix: str  # where the trunk sat in the checkpoint, after DDP's "module." was stripped
    dropped: dict[str, int] = field(default_factory=dict)  # key group -> number of tensors left out
    meta: dict[str, Any] = field(default_factory=dict)  # epoch, step, method... when the file says

    def summary(self) -> str:
        dropped = ", ".join(f"{k} ({n})" for k, n in sorted(self.dropped.items())) or "nothing"
        where = f"under '{self.prefix}'" if self.prefix else "at the top level"
        return (f"{_LAYOUT_NAMES[self.layout]}: {self.arch} trunk {where}, {len(self.state_dict)} tensors; "
                f"left out: {dropped}")


# ----------------------------------------------------------------------------------------- layouts

def flatten_checkpoint(obj: Any, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], str, dict]:
    """The tensors of a checkpoint with wrapper prefixes stripped, its layout, and its metadata."""
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(f"{source} holds a {type(obj).__name__}, not a state dict or checkpoint dict",
                                    "pass a file written by torch.save(model.state_dict()) or a training checkpoint")
    meta = {k: obj[k] for k in ("epoch", "step", "method", "arch") if isinstance(obj.get(k), (int, str))}
    is_hexa = isinstance(obj.get("model"), Mapping) and "method" in obj
    inner = obj
    for key in ("model", "state_dict"):  # hexa: "model"; MoCo/SwAV training files: "state_dict"
        if isinstance(obj.get(key), Mapping):
            inner = obj[key]
            break
    tensors = {_strip_wrappers(k): v for k, v in inner.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointFormatError(f"{source} contains no tensors (top-level keys: {sorted(map(str, obj))[:12]})",
                                    "pass a checkpoint that holds model weights")
    return tensors, ("hexa" if is_hexa else detect_layout(tensors)), meta


def _strip_wrappers(key: str) -> str:
    while key.startswith(_WRAPPERS):
        key = key.split(".", 1)[1]
    return key


def detect_layout(tensors: Mapping[str, torch.Tensor]) -> str:
    """Which release format a (wrapper-stripped) state dict follows."""
    keys = list(tensors)
    if any(k.startswith("encoder_q.") for k in keys):
        return "moco"
    if any(k.startswith("prototypes.prototypes") for k in keys):
        return "dcluster_v2"
    if any(k.startswith(("prototypes.", "projection_head.")) for k in keys):
        return "swav"
    return "timm"


# ------------------------------------------------------------------------------------- converting

def to_timm(checkpoint: Any, *, layout: str = "auto", arch: str | None = None,
            source: str | None = None) -> Converted:
    """Extract the trunk of a checkpoint (a path or an already-loaded object) in timm key names.

    `layout` is one of FROM_CHOICES; anything but "auto" is checked against the detected layout.
    `arch` (a timm name) is inferred from the checkpoint's `arch` field or its shapes when not given.
    """
    if layout not in FROM_CHOICES:
        raise CheckpointFormatError(f"unknown layout {layout!r}", f"use one of {', '.join(FROM_CHOICES)}")
    if isinstance(checkpoint, (str, Path)):
        source = source or str(checkpoint)
        checkpoint = read_checkpoint(checkpoint)
    source = source or "checkpoint"
    tensors, detected, meta = flatten_checkpoint(checkpoint, source)
    if detected not in FROM_CHOICES[layout]:
        wanted = " or ".join(_LAYOUT_NAMES[x] for x in sorted(FROM_CHOICES[layout]))
        raise CheckpointFormatError(
            f"{source} is not a {wanted}: it looks like a {_LAYOUT_NAMES[detected]} "
            f"(first keys: {', '.join(list(tensors)[:4])})",
            f"use --from auto (or --from {_from_choice(detected)})")
    archs = [arch] if arch else _arch_candidates(meta.get("arch"))
    first_error = None
    for candidate in archs:
        try:
            state_dict, prefix = find_trunk(tensors, trunk_template(candidate), candidate, source)
        except CheckpointFormatError as err:
            first_error = first_error or err
            continue
        return Converted(state_dict, candidate, detected, prefix,
                         dropped_groups(tensors, prefix, state_dict), meta)
    if arch is None:
        raise CheckpointFormatError(
            f"{source}: no ResNet trunk of a known depth ({', '.join(TRUNK_ARCHS)}) found; "
            f"as {archs[0]}: {first_error.message}", "pass --arch with the timm architecture it was trained with")
    raise first_error


def _from_choice(layout: str) -> str:
    return "swav" if layout == "dcluster_v2" else layout


def _arch_candidates(hint: str | None) -> list[str]:
    import timm

    hinted = [hint] if hint and timm.is_model(hint) else []
    return hinted + [a for a in TRUNK_ARCHS if a not in hinted]


def timm_filter(state_dict: Mapping[str, Any], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`pretrained_filter_fn` for timm: any supported checkpoint layout -> `model`'s trunk keys.

    timm calls it with whatever the weight file held; the classifier (absent from our checkpoints)
    is left out of the template so timm's own `num_classes` handling applies.
    """
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") or "fc"
    template = {k: tuple(v.shape) for k, v in model.state_dict().items()
                if not k.startswith(classifier + ".")}
    tensors, _, _ = flatten_checkpoint(state_dict, "the pretrained weights")
    arch = getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__
    trunk, _ = find_trunk(tensors, template, arch, "the pretrained weights")
    return trunk


def detectron2_name(key: str) -> str:
    """MoCo's detection/convert-pretrain-to-detectron2.py renaming, rule for rule."""
    if "layer" not in key:
        key = "stem." + key
    for t in (1, 2, 3, 4):
        key = key.replace(f"layer{t}", f"res{t + 1}")
    for t in (1, 2, 3):
        key = key.replace(f"bn{t}", f"conv{t}.norm")
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def to_detectron2(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """The pickle payload detectron2's checkpointer reads: numpy arrays under detectron2's R50 names.

    BatchNorm's num_batches_tracked counters are left out, as in detectron2's own model zoo files.
    """
    model = {detectron2_name(k): v.detach().cpu().numpy() for k, v in state_dict.items()
             if not k.endswith("num_batches_tracked")}
    return {"model": model, "__author__": "hexa-zoo", "matching_heuristics": True}


def convert(src: str | Path, out: str | Path, *, layout: str = "auto", to: str = "timm",
            arch: str | None = None) -> Converted:
    """Read `src`, extract its trunk and write it to `out` (atomically) in the `to` format.

    timm: a safetensors file, loadable with
    `timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=out, num_classes=0))`;
    detectron2: a pickle for `MODEL.WEIGHTS`; torchvision: `torch.save` of a state dict that
    `torchvision.models.<arch>().load_state_dict(sd, strict=False)` takes (only `fc` missing).
    """
    if to not in TARGETS:
        raise CheckpointFormatError(f"unknown output format {to!r}", f"use one of {', '.join(TARGETS)}")
    converted = to_timm(src, layout=layout, arch=arch)
    if to != "timm" and converted.arch not in TRUNK_ARCHS:  # their key names are those of torchvision ResNets
        raise CheckpointFormatError(f"{to} export needs a ResNet ({', '.join(TRUNK_ARCHS)}), got {converted.arch}",
                                    "use --to timm")
    out = Path(out)
    if to == "timm":
        atomic_save_safetensors({k: v.contiguous() for k, v in converted.state_dict.items()}, out,
                                {"format": "pt", "arch": converted.arch, "converted_from": converted.layout})
    elif to == "detectron2":
        atomic_write_bytes(out, pickle.dumps(to_detectron2(converted.state_dict), protocol=4))
    else:
        atomic_torch_save(dict(converted.state_dict), out)
    return converted
