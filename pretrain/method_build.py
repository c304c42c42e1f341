"""The method a recipe names: its class, its sizes fitted to the data, and the object the trainer trains."""

from __future__ import annotations

import dataclasses
import importlib

from torch import nn

from .config import PretrainConfig


def method_class(cfg: PretrainConfig) -> type:
    """The class implementing `cfg.method`: `METHOD` of pretrain/<catalog module>.py."""
    return importlib.import_module(f"{__package__}.methods.{cfg.family}").METHOD


def adapt_config(cfg: PretrainConfig, dataset_size: int, world_size: int,
                 steps_per_epoch: int) -> tuple[PretrainConfig, list[str]]:
    """`cfg` with the method's sizes fitted to the data (what config.yaml then records), one note per change."""
    section, notes = method_class(cfg).adapt(cfg.method_config(), dataset_size=dataset_size,
                                             batch_size=cfg.batch_size, world_size=world_size,
                                             steps_per_epoch=steps_per_epoch)
    return dataclasses.replace(cfg, **{cfg.family: section}), notes


def build_method(cfg: PretrainConfig, dataset_size: int) -> nn.Module:
    """The method object of `cfg.method`, with hard views exactly for the HEXA methods."""
    return method_class(cfg)(cfg.method_config(), cfg.hard_views, cfg.arch, dataset_size)
