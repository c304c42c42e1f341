"""Finding the trunk in a checkpoint's tensors: the key prefix under which it holds a whole timm architecture.

Whatever the layout, the trunk is found the same way (after DDP's ``module.`` wrapper was stripped): look
for the key prefix under which the checkpoint holds every tensor of the timm architecture with the right
shapes (``encoder_q.``, ``trunk.``, ``encoder.0.`` ...). Key-encoder/momentum copies rank last, so MoCo's
``encoder_k`` is never taken for the query encoder.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass
from typing import Mapping

import torch

from .errors import CheckpointFormatError

# Architectures tried, in order, when a checkpoint does not say which one it holds.
TRUNK_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
_SECONDARY = re.compile(r"(^|\.)(encoder_k|key_encoder|momentum\w*|teacher|target\w*|\w*ema)(\.|$)")


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


def dropped_groups(tensors, prefix, kept) -> dict[str, int]:
    """Summarise what was left out, by key group (encoder_k, queue, encoder_q.fc, projection_head ...)."""
    counts = Counter()
    for key in tensors:
        inside = key.startswith(prefix)
        if inside and key[len(prefix):] in kept:
            continue
        rest = key[len(prefix):] if inside else key
        counts[(prefix if inside else "") + rest.split(".", 1)[0]] += 1
    return dict(counts)
