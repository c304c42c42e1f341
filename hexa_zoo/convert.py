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

Whatever the layout, the trunk is found the same way: strip DDP's ``module.`` wrapper, then look
for the key prefix under which the checkpoint holds every tensor of the timm architecture with the
right shapes (``encoder_q.``, ``trunk.``, ``encoder.0.`` ...). Key-encoder/momentum copies rank last,
so MoCo's ``encoder_k`` is never taken for the query encoder.

Loading is safe by construction: pickles load with ``torch.load(weights_only=True)``, and one that
would import a Python object is refused before anything in it runs.
"""

from __future__ import annotations

import functools
import pickle
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import CheckpointFormatError, UnsafeCheckpointError, WeightsNotFoundError
from .fileio import atomic_path, atomic_torch_save, atomic_write_bytes

# Architectures tried, in order, when a checkpoint does not say which one it holds.
TRUNK_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
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
_SECONDARY = re.compile(r"(^|\.)(encoder_k|key_encoder|momentum\w*|teacher|target\w*|\w*ema)(\.|$)")


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


# ----------------------------------------------------------------------------------------- reading

def read_checkpoint(path: str | Path) -> Any:
    """Load a checkpoint without running code: safetensors, or a pickle with `weights_only=True`.

    What the file is comes from its bytes first (`filekind.sniff`), so an empty, text, truncated or random
    file is named as such, whatever its suffix; only a pickle that imports code is called unsafe.
    """
    from .filekind import pickle_globals, safetensors_problem, sniff

    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"no checkpoint file at {path}", "check the path (and that the download finished)")
    kind, what = sniff(path)
    if kind not in ("safetensors", "zip", "pickle"):
        raise CheckpointFormatError(f"{path} is {what}, not model weights",
                                    "pass a checkpoint saved by torch.save (.pth, .pth.tar, .pt) or a .safetensors file")
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        problem = safetensors_problem(path)
        try:
            if problem is None:
                return load_file(path)
        except (SafetensorError, OSError, ValueError) as err:
            problem = str(err).splitlines()[0][:200]
        raise CheckpointFormatError(f"{path} is a damaged safetensors file: {problem}", _REFETCH)
    refuse_unsafe_pickle(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # legacy (non-zip) files are judged here, while unpickling
        names = pickle_globals(path) if kind == "pickle" else None
        if names:  # a whole pickle that imports something torch's safe loader does not allow
            shown = [n for n in names if not n.startswith(("torch.", "collections.OrderedDict"))] or names
            raise _unsafe(path, sorted(set(shown))) from None
        detail = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()[0][:120] if str(err) else ""
        raise CheckpointFormatError(f"{path} is {what} that is damaged, truncated or not a checkpoint"
                                    + (f" ({detail})" if detail else ""), _REFETCH) from None
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, EOFError, KeyError... for broken files
        first = (str(err).splitlines() or [type(err).__name__])[0][:160]
        raise CheckpointFormatError(f"{path} is {what} that is damaged or truncated ({type(err).__name__}: {first})",
                                    _REFETCH) from None


def check_safetensors(path: str | Path) -> None:
    """Raise the same clear errors as `read_checkpoint` for a safetensors file that is not whole, without loading it."""
    from .filekind import safetensors_problem, sniff

    path = Path(path)
    kind, what = sniff(path)
    if kind != "safetensors":
        raise CheckpointFormatError(f"{path} is {what}, not a safetensors file", _REFETCH)
    problem = safetensors_problem(path)
    if problem:
        raise CheckpointFormatError(f"{path} is a damaged safetensors file: {problem}", _REFETCH)


_REFETCH = "download or export it again (a copy cut short is the usual cause), or pass another file"


def refuse_unsafe_pickle(path: str | Path) -> None:
    """Raise UnsafeCheckpointError if unpickling `path` would import anything but tensor machinery.

    `torch.serialization.get_unsafe_globals_in_checkpoint` only reads the pickle's opcodes; nothing in
    the file is executed.
    """
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # not a zip checkpoint (legacy format): torch.load(weights_only=True) will judge
        return
    if unsafe:
        raise _unsafe(path, unsafe)


def _unsafe(path: Path, names: list[str]) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"refusing to load {path}: unpickling it would import and call {', '.join(sorted(names))}, "
        "which can run arbitrary code (nothing from it was executed)",
        "if you trust the file, re-save just its tensors elsewhere, e.g. "
        "torch.save(torch.load(SRC, weights_only=False)['state_dict'], 'clean.pth'), then convert clean.pth")


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


# ------------------------------------------------------------------------------ finding the trunk

@functools.lru_cache(maxsize=None)
def trunk_template(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of timm `arch` with no classifier, built on the meta device (no memory, no init)."""
    import timm

    if not timm.is_model(arch):
        raise CheckpointFormatError(f"unknown timm architecture {arch!r}", f"use one of {', '.join(TRUNK_ARCHS)}")
    with torch.device("meta"):
        model = timm.create_model(arch, num_classes=0)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@dataclass
class _Match:
    prefix: str
    missing: list[str]
    mismatched: list[str]
    unexpected: list[str]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched or self.unexpected)

    @property
    def problems(self) -> int:
        return len(self.missing) + len(self.mismatched) + len(self.unexpected)


def _candidate_prefixes(keys, template) -> set[str]:
    prefixes = set()
    for key in keys:
        if key in template:
            prefixes.add("")
        for i, ch in enumerate(key):
            if ch == "." and key[i + 1:] in template:
                prefixes.add(key[: i + 1])
    return prefixes


def _match(tensors, template, prefix) -> _Match:
    sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    roots = {k.split(".", 1)[0] for k in template}
    missing = [k for k in template if k not in sub and not k.endswith("num_batches_tracked")]
    mismatched = [f"{k}: checkpoint {tuple(sub[k].shape)} vs model {template[k]}"
                  for k in template if k in sub and tuple(sub[k].shape) != template[k]]
    # Keys inside the trunk's own modules that the architecture lacks mean a different depth/width.
    unexpected = [k for k in sub if k not in template and k.split(".", 1)[0] in roots]
    return _Match(prefix, missing, mismatched, unexpected)


def _prefix_rank(prefix: str) -> int:
    if _SECONDARY.search(prefix.rstrip(".")):
        return 9  # a momentum/key copy: only if nothing else fits
    if prefix.startswith("trunk."):
        return 0
    if "encoder_q" in prefix:
        return 1
    if prefix.startswith(("encoder.", "backbone.", "model.")):
        return 2
    return 3 if prefix == "" else 4


def find_trunk(tensors: Mapping[str, torch.Tensor], template: Mapping[str, tuple[int, ...]],
               arch: str, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], str]:
    """Extract the tensors matching `template` (timm keys, in template order) and the prefix they sat under.

    Raises CheckpointFormatError naming missing, mismatched and unexpected keys when no prefix fits.
    """
    matches = [_match(tensors, template, p) for p in _candidate_prefixes(tensors, template)]
    # A momentum/key copy is taken only when the checkpoint has no other trunk at all: a broken query
    # encoder must be reported, not silently replaced by MoCo's encoder_k.
    primary = [m for m in matches if _prefix_rank(m.prefix) < 9 and len(m.missing) < len(template) / 2]
    matches = primary or matches
    good = sorted((m for m in matches if m.ok), key=lambda m: (_prefix_rank(m.prefix), len(m.prefix)))
    if not good:
        raise _no_trunk_error(tensors, matches, arch, source)
    best = good[0]
    rivals = [m for m in good[1:] if _prefix_rank(m.prefix) == _prefix_rank(best.prefix)]
    for rival in rivals:  # e.g. `trunk.*` and `encoder.0.*` both present: fine if they are the same weights
        if not all(torch.equal(tensors[best.prefix + k], tensors[rival.prefix + k])
                   for k in template if best.prefix + k in tensors):
            raise CheckpointFormatError(
                f"{source} holds several different {arch} trunks (under '{best.prefix}' and '{rival.prefix}')",
                "extract the one you want into its own state dict and convert that")
    out = {}
    for key, shape in template.items():
        value = tensors.get(best.prefix + key)
        if value is None:  # only num_batches_tracked may be absent (older checkpoints); eval ignores it
            value = torch.zeros(shape, dtype=torch.long)
        out[key] = value
    return out, best.prefix


def _no_trunk_error(tensors, matches, arch, source) -> CheckpointFormatError:
    def names(items, n=8):
        return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")

    if not matches:
        sample = names(sorted(tensors), 6)
        return CheckpointFormatError(
            f"no {arch} trunk in {source}: none of its keys end in a {arch} parameter name (its keys: {sample})",
            "check that this is a ResNet checkpoint of a supported layout (MoCo, SwAV, DeepCluster-v2, hexa-zoo, "
            "timm/torchvision) and pass the right --arch")
    best = min(matches, key=lambda m: m.problems)
    where = f"under '{best.prefix}'" if best.prefix else "at the top level"
    parts = [f"missing: {names(best.missing)}" if best.missing else "",
             f"shape mismatch: {names(best.mismatched, 4)}" if best.mismatched else "",
             f"unexpected: {names(best.unexpected)}" if best.unexpected else ""]
    return CheckpointFormatError(
        f"{source} does not hold a {arch} trunk (closest match {where}; " + "; ".join(p for p in parts if p) + ")",
        "pass the architecture the checkpoint was trained with (--arch resnet18, resnet50, ...)")


def _dropped_groups(tensors, prefix, kept) -> dict[str, int]:
    """Summarise what was left out, by key group (encoder_k, queue, encoder_q.fc, projection_head ...)."""
    counts = Counter()
    for key in tensors:
        inside = key.startswith(prefix)
        if inside and key[len(prefix):] in kept:
            continue
        rest = key[len(prefix):] if inside else key
        counts[(prefix if inside else "") + rest.split(".", 1)[0]] += 1
    return dict(counts)


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
                         _dropped_groups(tensors, prefix, state_dict), meta)
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
        from safetensors.torch import save_file

        with atomic_path(out) as tmp:
            save_file({k: v.contiguous() for k, v in converted.state_dict.items()}, tmp,
                      metadata={"format": "pt", "arch": converted.arch, "converted_from": converted.layout})
    elif to == "detectron2":
        atomic_write_bytes(out, pickle.dumps(to_detectron2(converted.state_dict), protocol=4))
    else:
        atomic_torch_save(dict(converted.state_dict), out)
    return converted
