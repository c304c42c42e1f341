"""A pre-training step's ideal cost, in supervised steps: what `bench/pretrain_step.py` measures each method
against, and the unit `hexa study --mode equal-compute` gives both sides of a comparison equally.

Counting a forward of the anchor batch as 1 and a backward as 2, one supervised step (one crop forward and
backward) is 3, the unit here. MoCo-v2: the query forward-backward and the key forward, 4/3. A multi-crop
method (DeepCluster-v2, SwAV): every crop forward-backward, by pixels (2x224 + 6x96: 3.10). HEXA adds one
forward-backward of the anchor per hard view, and one per attack step that cannot reuse the clean gradient
(none for MoCo's free step; one for multi-crop methods or aux BN; `steps` - free for PGD).
"""

from __future__ import annotations

from ..config import PretrainConfig
from .hard_views import attack_passes


def multicrop_pixels(cfg: PretrainConfig) -> float:
    """A multi-crop's pixels over one global crop's (2x224 + 6x96: 2 + 6 * 96^2 / 224^2 = 3.10)."""
    aug = cfg.augment
    return sum(n * s * s for s, n in zip(aug.crop_sizes, aug.crop_counts)) / aug.crop_sizes[0] ** 2


def ideal_step_cost(cfg: PretrainConfig) -> float:
    """The ideal time of one step of `cfg`'s method, in supervised steps of the same batch."""
    base = multicrop_pixels(cfg) if cfg.method_config().multicrop else (3 + 1) / 3
    hv = cfg.hard_views
    return base + hv.use_adversarial + hv.use_cutmix + attack_passes(hv, cfg.method_class)
