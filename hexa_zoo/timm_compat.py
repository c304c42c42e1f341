"""The one place hexa-zoo reaches into timm's private modules.

Everything else hexa-zoo needs from timm is public (`timm.models.PretrainedCfg`, `generate_default_cfgs`,
`get_pretrained_cfg`, `get_arch_pretrained_cfgs`, `build_model_with_cfg`, `timm.create_model`). What has no
public form is writing a model's `config.json` in the Hub layout without uploading it: `push_to_hf_hub`
uploads, and the function it calls, `timm.models._hub.save_config_for_hf`, is private. Its signature says
`config_path: str`, but timm 1.0.9 and 1.0.29 (read, and 1.0.29 run) call `config_path.open('w')`, while
1.0.31 wraps it in `Path`: a `str` crashed the end of every training run there. It gets a `Path`.

tests/test_timm_compat.py runs this against the installed timm; CI runs it at the newest timm (`make test`)
and at pyproject's floor (`make test-floors`), the two ends of the supported range.
"""
from __future__ import annotations

from pathlib import Path

import torch


def write_hf_config(model: torch.nn.Module, path: str | Path, extra: dict | None = None) -> None:
    """Write `model`'s `config.json` as timm's `push_to_hf_hub` does; `extra` becomes top-level keys."""
    from timm.models._hub import save_config_for_hf

    save_config_for_hf(model, Path(path), model_config=dict(extra or {}))
