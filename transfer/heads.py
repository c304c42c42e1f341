"""Linear heads that `hexa transfer linear` trained, saved beside its record for the protocols that reuse them.

A head is a safetensors file (`weight` (K, D), `bias` (K)) acting on the trunk's raw pooled features (the
fast variant's standardisation is folded into it), with metadata naming the trunk's weights, the classes and
the evaluation transform. The linear record names it under `artifacts.head` (path relative to the record and
sha256). `--head` of `hexa transfer adversarial` / `robustness` takes that record or the head file itself.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from hexa_zoo.errors import ConfigError, DataError
from hexa_zoo.fileio import atomic_save_safetensors, sha256_file


def fold_standardisation(fc: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> nn.Linear:
    """The head on raw features equal to `fc` on (x - mean) / std."""
    out = nn.Linear(fc.in_features, fc.out_features)
    with torch.no_grad():
        w = fc.weight.detach().float().cpu() / std.float().cpu()
        out.weight.copy_(w)
        out.bias.copy_(fc.bias.detach().float().cpu() - w @ mean.float().cpu())
    return out


def save_head(out: str | os.PathLike, fc: nn.Linear, *, classes: Sequence[str], info: dict, transform: Any,
              protocol: str) -> dict:
    """Write the head atomically under `out/heads/`; returns the record's `artifacts.head` entry."""
    meta = {"format": "hexa-linear-head/1", "protocol": protocol, "classes": json.dumps(list(classes)),
            "trunk_weights_sha256": str(info.get("weights_sha256") or ""), "transform": transform.describe()}
    tensors = {"weight": fc.weight.detach().float().cpu().contiguous(), "bias": fc.bias.detach().float().cpu()}
    folder = Path(out) / "heads"
    digest = hashlib.sha256(tensors["weight"].numpy().tobytes() + tensors["bias"].numpy().tobytes()).hexdigest()
    name = f"linear-{str(info.get('name') or 'model').replace('/', '_')}-{digest[:12]}.safetensors"
    path = atomic_save_safetensors(tensors, folder / name, meta)
    return {"path": f"heads/{name}", "sha256": sha256_file(path)}


def load_head(spec: str | os.PathLike, *, trunk_sha256: str | None = None) -> tuple[nn.Linear, dict]:
    """(head, metadata) from a linear record (JSON naming `artifacts.head`) or a head file.

    A head trained on other trunk weights than `trunk_sha256` is refused: its classes would mean nothing.
    """
    from safetensors import safe_open

    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"--head {spec} does not exist", "pass the JSON record of a `hexa transfer linear` run, "
                          "or the heads/*.safetensors file it wrote")
    source = str(path)
    if path.suffix == ".json":
        record = json.loads(path.read_text())
        entry = (record.get("artifacts") or {}).get("head")
        if not entry:
            raise ConfigError(f"record {path} names no linear head", "use a record written by `hexa transfer linear`")
        path = path.parent / entry["path"]
        if not path.is_file() or sha256_file(path) != entry["sha256"]:
            raise DataError(f"the head {path} named by {source} is missing or changed",
                            "rerun `hexa transfer linear`, or pass another head")
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
        weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
    if meta.get("format") != "hexa-linear-head/1":
        raise DataError(f"{path} is not a hexa linear head", "pass a heads/*.safetensors file written by hexa")
    if trunk_sha256 and meta.get("trunk_weights_sha256") not in ("", trunk_sha256):
        raise ConfigError(f"the head {path} was trained on other trunk weights ({meta['trunk_weights_sha256'][:12]})",
                          "pass the head of a linear run on this --model")
    fc = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        fc.weight.copy_(weight)
        fc.bias.copy_(bias)
    meta["classes"] = json.loads(meta.get("classes", "[]"))
    meta["path"], meta["source"] = str(path), source
    meta["sha256"] = sha256_file(path)
    return fc.eval(), meta
