"""Publishing a run's trunk to the local zoo: the target checked before any work, the folder written at the end.

A run refuses to start when its end would replace another run's zoo folder; at its end it publishes the
trunk with a model card (`hexa_zoo.publish`), and `load_hint` gives the line that loads it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from hexa_zoo.catalog import zoo_model_name
from hexa_zoo.errors import ConfigError

from ..config import PretrainConfig

log = logging.getLogger("pretrain")


def check_publish_target(cfg: PretrainConfig, out: Path, resume: str | None) -> bool:
    """Refuse, before any work, a run whose end would replace another run's zoo folder; returns
    whether publishing may replace what is there (`overwrite`, or the folder this run itself published)."""
    if not cfg.publish:
        return False
    from hexa_zoo.publish import published_identity
    from hexa_zoo.weights import zoo_folder

    name, tag = zoo_model_name(cfg.method, cfg.arch), cfg.resolved_tag()
    folder = zoo_folder(name, tag, Path(cfg.zoo) if cfg.zoo else None)
    there = published_identity(folder)
    if there is None or cfg.overwrite:
        return True
    own = resume is not None and there["out"] and Path(there["out"]).resolve() == out.resolve()
    if own:
        return True
    raise ConfigError(f"the zoo already holds {name}.{tag} at {folder} (weights sha256 "
                      f"{there['weights_sha256'][:12]}..., from {there['source']}), and this run would "
                      "publish under the same name at its end; nothing was trained",
                      "choose another tag (--set tag=NAME), pass --overwrite to replace it, or continue the "
                      f"run that published it with --resume auto --out {there['out'] or 'ITS_OUT'}")


def publish_trunk(cfg: PretrainConfig, trunk: nn.Module, final: dict, *, images: int, data_root,
                  overwrite: bool) -> tuple[Path, str]:
    """Write `trunk` (unwrapped from DDP) and its card to the zoo; returns (the folder, `name.tag`)."""
    from hexa_zoo.publish import publish

    weights = {k: v.detach().cpu().contiguous() for k, v in trunk.state_dict().items()}
    name, tag = zoo_model_name(cfg.method, cfg.arch), cfg.resolved_tag()
    card = {
        "description": cfg.description or (f"{cfg.method} pre-training of {cfg.arch} for {cfg.epochs} epoch(s) "
                                           f"on {cfg.data}, global batch {cfg.batch_size}."),
        "recipe": cfg.to_dict(),
        "data": f"{cfg.data} ({images} images from {data_root})",
        "metrics": {"final_pretrain_loss": final.get("loss")},
    }
    zoo_dir = publish(weights, name, tag=tag, zoo=Path(cfg.zoo) if cfg.zoo else None, card=card, overwrite=overwrite)
    log.info("published %s.%s to %s", name, tag, zoo_dir)
    return zoo_dir, f"{name}.{tag}"


def load_hint(model: str, zoo_dir: Path) -> str:
    """The Python line that loads a published `name.tag`: by name where the name is registered, else the folder."""
    from hexa_zoo.catalog import MODELS

    if model.split(".", 1)[0] in MODELS:
        return f"import hexa_zoo, timm; timm.create_model('{model}', pretrained=True)"
    return f"import hexa_zoo; hexa_zoo.load_trunk('{zoo_dir}')"
