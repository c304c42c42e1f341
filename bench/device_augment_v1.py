"""The device side of the gpu pipeline as it was before issue 19, kept as bench/data_pipeline.py's baseline.

Not used by training: every op at every jitter position (`torch.where` keeps the drawn one), float32 blur,
one call per view. bench/data_pipeline.py --device times pretrain/data/device_augment.py against it in one run.
"""

from __future__ import annotations

import torch

from pretrain.data.augment import BRIGHTNESS, CONTRAST, GRAYSCALE, HUE, JITTER_ON, ORDER, SATURATION, SIGMA, PendingViews
# The blur in float32, as it was (the current one computes in its input's dtype, float32 here).
from pretrain.data.device_augment import _gray, _hue, _per_view, gaussian_blur, kernel_radius

def _brightness(x, f):
    return (x * _per_view(f)).clamp_(0, 1)


def _contrast(x, f):
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return (mean + _per_view(f) * (x - mean)).clamp_(0, 1)


def _saturation(x, f):
    gray = _gray(x)
    return (gray + _per_view(f) * (x - gray)).clamp_(0, 1)


_JITTER_OPS = ((_brightness, BRIGHTNESS), (_contrast, CONTRAST), (_saturation, SATURATION), (_hue, HUE))


def colour_jitter(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Jitter a float batch (B, 3, H, W) in [0, 1] with each view's factors and op order (params (B, N_PARAMS))."""
    on = params[:, JITTER_ON] > 0
    order = params[:, ORDER]
    for position in range(4):
        out = x
        for op, (fn, column) in enumerate(_JITTER_OPS):
            chosen = on & (order[:, position] == op)
            out = torch.where(_per_view(chosen), fn(x, params[:, column]), out)
        x = out
    return x


def augment_batch(images: torch.Tensor, params: torch.Tensor, radius: int | None = None) -> torch.Tensor:
    """uint8 (B, 3, H, W) and params (B, N_PARAMS) on one device -> float views in [0, 1], augmented.
    radius: the blur kernel's half-width (`kernel_radius` of the params' CPU copy); None: from params."""
    x = images.float().div_(255)
    x = colour_jitter(x, params)
    x = torch.where(_per_view(params[:, GRAYSCALE] > 0), _gray(x).expand_as(x), x)
    return gaussian_blur(x, params[:, SIGMA], radius)


def finish_views_v1(views, device: torch.device, memory_format=torch.contiguous_format) -> list[torch.Tensor]:
    """A loader batch of views -> float views in [0, 1] on `device`, whatever the pipeline.

    PendingViews (pipeline gpu): moved as uint8, then colour, grayscale and blur here, batched.
    uint8 tensors (pipeline cpu): moved, then scaled. Float tensors: moved as they are.
    """
    if isinstance(views, PendingViews):
        radii = [kernel_radius(views.params[:, i, SIGMA]) for i in range(len(views.images))]  # on the host: no sync
        params = views.params.to(device, non_blocking=True).float()
        with torch.autocast(device.type, enabled=False):
            out = [augment_batch(v.to(device, non_blocking=True), params[:, i], radii[i])
                   for i, v in enumerate(views.images)]
        return [v.contiguous(memory_format=memory_format) for v in out]
    raise TypeError('the baseline finishes PendingViews only')
