"""Frozen-dataclass configuration: load from YAML, override with `--set key=value`, save beside outputs.

One mechanism for pretrain recipes and transfer protocols alike:

    cfg = load_config(MocoRecipe, "pretrain/configs/moco_v2_r18_embedded.yaml", ["lr=0.06", "moco.queue_size=4096"])
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict:
    """A plain (YAML/JSON-serialisable) dict of a config dataclass, nested ones included."""
    return _plain(dataclasses.asdict(cfg))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_dict(cls: type[T], data: dict, *, where: str = "config") -> T:
    """Build `cls` from a dict, checking names and coercing values to the declared field types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {where} key(s) {unknown}",
                          f"valid keys are: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_dict(tp, value, where=where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} fits none of {args}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed-length tuple[int, str]
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {list(value)}")
            return tuple(_coerce(a, v, where) for a, v in zip(args, value))
        item = args[0] if args else Any  # tuple[int, ...] or list[int]
        return origin(_coerce(item, v, where) for v in value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float, str):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    return value


def parse_overrides(pairs: Iterable[str]) -> dict:
    """`["a=1", "moco.queue_size=4096"]` -> `{"a": 1, "moco": {"queue_size": 4096}}` (values parsed as YAML)."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not key=value", "write it as --set name=value, e.g. --set lr=0.1")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(cls: type[T], yaml_path: str | os.PathLike | None = None, overrides: Iterable[str] = (),
                base: T | None = None) -> T:
    """Defaults (or `base`), then the YAML file, then `--set` overrides, in that order."""
    data = to_dict(base if base is not None else cls())
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist", "pass the path of a YAML recipe")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        data = merge(data, loaded)
    data = merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write `cfg` as YAML atomically: its own `to_dict()` where it has one (what it says it is), else every field."""
    from .fileio import atomic_write_text

    data = cfg.to_dict() if hasattr(cfg, "to_dict") else to_dict(cfg)
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
