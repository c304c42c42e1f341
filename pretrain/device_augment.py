"""The device side of the augmentation: colour jitter, grayscale and blur, batched, just before the step.

With `augment.pipeline=gpu` the loader workers only decode, crop, resize and flip; each view arrives
as uint8 pixels plus its own colour parameters (`augment.PendingViews`), drawn in the worker from the
sample's seeded RNG. Nothing here draws a random number, so a resumed run sees the same pixels.

The ops are the ones `augment.colour_on_cpu` applies per image, on float [0, 1] for a whole batch:
- jitter: brightness x*b; contrast m + c*(x - m) with m the mean of the grayscale image; saturation
  g + s*(x - g) with g the grayscale image; hue a shift of H in HSV; each clamped to [0, 1], in the
  view's own random order (for each of the four positions, every op is computed and `torch.where`
  keeps the one each view drew: no host sync, no per-view loop);
- grayscale (ITU-R 601 luma, as PIL and OpenCV);
- a Gaussian blur, separable, one kernel per view (`sigma` 0: identity) of one width per batch that
  covers +-3 of the batch's largest sigma, replicate border (as the CPU path).
They run in float32 outside autocast. The CPU path rounds to uint8 after every op and this one does
not, so the two agree to about a grey level (tests/test_augment.py states the tolerance).

`finish_views` is what the trainer calls: it moves any batch of views to the device and returns float
views in [0, 1], whichever pipeline made them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .augment import BRIGHTNESS, CONTRAST, GRAYSCALE, HUE, JITTER_ON, ORDER, SATURATION, SIGMA, PendingViews, blur_radius

LUMA = (0.299, 0.587, 0.114)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def _per_view(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def _brightness(x, f):
    return (x * _per_view(f)).clamp_(0, 1)


def _contrast(x, f):
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return (mean + _per_view(f) * (x - mean)).clamp_(0, 1)


def _saturation(x, f):
    gray = _gray(x)
    return (gray + _per_view(f) * (x - gray)).clamp_(0, 1)


def _hue(x, shift):
    """Rotate the hue by `shift` turns (HSV's H in [0, 1)), per view."""
    r, g, b = x.unbind(1)
    value, _ = x.max(dim=1)
    low, _ = x.min(dim=1)
    chroma = value - low
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    h = torch.where(value == r, ((g - b) / safe) % 6, torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(chroma > 0, h / 6, torch.zeros_like(h))
    h = (h + shift.view(-1, 1, 1)) % 1.0
    # Back to RGB: each channel n (R 5, G 3, B 1) is v - c * clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6.
    out = [value - chroma * torch.clamp(torch.minimum(k, 4 - k), 0, 1)
           for k in ((n + 6 * h) % 6 for n in (5.0, 3.0, 1.0))]
    return torch.stack(out, dim=1).clamp_(0, 1)


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


def kernel_radius(sigma: torch.Tensor) -> int:
    """The half-width covering +-3 of the largest sigma; 0 when nothing is blurred. Give it the CPU copy
    of the params: on a GPU tensor it waits for the device."""
    largest = float(sigma.max()) if sigma.numel() else 0.0
    return blur_radius(largest) if largest > 0 else 0


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int | None = None) -> torch.Tensor:
    """Blur each view with its own sigma (0: unchanged); separable, replicate border, +-3 sigma covered."""
    radius = kernel_radius(sigma) if radius is None else radius
    if radius == 0:
        return x
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp(min=1e-3).view(-1, 1)
    weights = torch.exp(-0.5 * (offsets / s) ** 2)
    delta = (offsets == 0).to(x.dtype).expand_as(weights)
    weights = torch.where((sigma > 0).view(-1, 1), weights / weights.sum(1, keepdim=True), delta)
    b, c, h, w = x.shape
    kernel = weights.repeat_interleave(c, dim=0)  # (B*C, K): one kernel per view, shared by its channels
    flat = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, kernel.view(b * c, 1, 1, -1), groups=b * c)
    flat = F.conv2d(flat, kernel.view(b * c, 1, -1, 1), groups=b * c)
    return flat.view(b, c, h, w)


def augment_batch(images: torch.Tensor, params: torch.Tensor, radius: int | None = None) -> torch.Tensor:
    """uint8 (B, 3, H, W) and params (B, N_PARAMS) on one device -> float views in [0, 1], augmented.
    radius: the blur kernel's half-width (`kernel_radius` of the params' CPU copy); None: from params."""
    x = images.float().div_(255)
    x = colour_jitter(x, params)
    x = torch.where(_per_view(params[:, GRAYSCALE] > 0), _gray(x).expand_as(x), x)
    return gaussian_blur(x, params[:, SIGMA], radius)


def finish_views(views, device: torch.device, memory_format=torch.contiguous_format) -> list[torch.Tensor]:
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
    out = []
    for v in views:
        v = v.to(device, non_blocking=True)
        if v.dtype == torch.uint8:
            v = v.float().div_(255)
        out.append(v.contiguous(memory_format=memory_format))
    return out


def select(views, rows: torch.Tensor):
    """The same rows of every view (PendingViews or a list of tensors), e.g. to top up a thinned batch."""
    if isinstance(views, PendingViews):
        return PendingViews([v[rows] for v in views.images], views.params[rows])
    return [v[rows] for v in views]
