"""Turn self-supervised checkpoints into plain trunk weights, and export them for other frameworks.

The layouts understood (MoCo v1/v2/v3, SimSiam, SwAV, DeepCluster-v2, PyContrast, VISSL, the SimCLR-v1/v2
and BYOL PyTorch conversions, hexa-zoo training checkpoints, bare timm/torchvision trunks) are described,
detected and renamed in `layouts`; whatever the layout, the trunk is then found by its keys and shapes
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
from .layouts import (FROM_CHOICES, LAYOUTS, TORCHVISION_NAMED, ambiguity_error, detect,
                      gather_tensors, to_torchvision_names)
from .trunk_finding import TRUNK_ARCHS, dropped_groups, find_trunk, trunk_template

TARGETS = ("timm", "detectron2", "torchvision")


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
        note = "; input: pixels in [0, 1], no mean/std normalisation" if LAYOUTS[self.layout].unnormalized_input else ""
        return (f"{LAYOUTS[self.layout].what}: {self.arch} trunk {where}, {len(self.state_dict)} tensors; "
                f"left out: {dropped}{note}")


# ----------------------------------------------------------------------------------------- layouts

def flatten_checkpoint(obj: Any, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], tuple[str, ...], dict]:
    """The tensors of a checkpoint (wrappers stripped), the layouts its keys admit (one, or several when
    they cannot tell), and its metadata."""
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(f"{source} holds a {type(obj).__name__}, not a state dict or checkpoint dict",
                                    "pass a file written by torch.save(model.state_dict()) or a training checkpoint")
    meta = {k: obj[k] for k in ("epoch", "step", "method", "arch") if isinstance(obj.get(k), (int, str))}
    tensors = gather_tensors(obj)
    if not tensors:
        raise CheckpointFormatError(f"{source} contains no tensors (top-level keys: {sorted(map(str, obj))[:12]})",
                                    "pass a checkpoint that holds model weights")
    is_hexa = isinstance(obj.get("model"), Mapping) and "method" in obj
    candidates = ("hexa",) if is_hexa else detect(tensors, tuple(map(str, obj)))
    return tensors, candidates, meta


def _choose_layout(candidates: tuple[str, ...], layout: str, tensors, source: str) -> str:
    if layout == "auto":
        if len(candidates) > 1:
            raise ambiguity_error(candidates, source)
        return candidates[0]
    admitted = [c for c in candidates if c in FROM_CHOICES[layout]]
    if layout in TORCHVISION_NAMED and "timm" in candidates:  # any torchvision-named file, as the user says
        return layout
    if admitted:
        return layout if layout in admitted else admitted[0]
    wanted = " or ".join(LAYOUTS[x].what for x in sorted(FROM_CHOICES[layout]))
    seen = " or ".join(LAYOUTS[c].what for c in candidates)
    raise CheckpointFormatError(
        f"{source} is not a {wanted}: it looks like a {seen} (first keys: {', '.join(list(tensors)[:4])})",
        f"use --from auto (or --from {' / --from '.join(_from_choice(c) for c in candidates)})")


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
    tensors, candidates, meta = flatten_checkpoint(checkpoint, source)
    detected = _choose_layout(candidates, layout, tensors, source)
    tensors = to_torchvision_names(tensors, detected)
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
    tensors, candidates, _ = flatten_checkpoint(state_dict, "the pretrained weights")
    tensors = to_torchvision_names(tensors, candidates[0])
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
                                {"format": "pt", "arch": converted.arch, "converted_from": converted.layout,
                                 **({"input": "unnormalized [0, 1]"} if LAYOUTS[converted.layout].unnormalized_input
                                    else {})})
    elif to == "detectron2":
        atomic_write_bytes(out, pickle.dumps(to_detectron2(converted.state_dict), protocol=4))
    else:
        atomic_torch_save(dict(converted.state_dict), out)
    return converted
