"""The device side of the augmentation: colour jitter, grayscale and blur, batched, just before the step.

With `augment.pipeline=gpu` the loader workers only decode, crop, resize and flip; each view arrives
as uint8 pixels plus its own colour parameters (`augment.PendingViews`), drawn in the worker from the
sample's seeded RNG. Nothing here draws a random number, so a resumed run sees the same pixels.

The ops are the ones `augment.colour_on_cpu` applies per image, on float [0, 1], for all views of one size
at once (the two MoCo views are one batch; multi-crop is one batch per crop size), converted from uint8
once:
- jitter: brightness, contrast and saturation are one blend each, t + f*(x - t) with t = 0 (brightness),
  the mean of the grayscale image (contrast) or the grayscale image (saturation); so at each of the four
  order positions one blend runs with each view's own f and t, gathered from its op at that position
  (f = 1 and t = 0 where the view has hue there, or no jitter: unchanged). Hue (a shift of H in HSV)
  runs, at each position, only on the views that drew it there: their indices are computed on the host
  from the params' CPU copy, so nothing waits for the device. Every view gets exactly its four ops;
- grayscale (ITU-R 601 luma, as PIL and OpenCV);
- a Gaussian blur, separable, one kernel per view (`sigma` 0: identity) of one width per batch that
  covers +-3 of the batch's largest sigma, replicate border (as the CPU path); on CUDA in half precision
  (the blur is a weighted mean of values in [0, 1]: fp16 keeps it within a tenth of a grey level).
The colour ops run in float32 outside autocast. The CPU path rounds to uint8 after every op and this one
does not, so the two agree to about a grey level (tests/test_augment.py states the tolerance).

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


FACTORS = [BRIGHTNESS, CONTRAST, SATURATION, HUE]  # the params' columns of ops 0..3
HUE_OP = 3


def hue_rows(params: torch.Tensor) -> list[torch.Tensor]:
    """For each order position, the views that apply hue there (params' CPU copy: no device sync)."""
    order = params[:, ORDER].long()
    on = params[:, JITTER_ON] > 0
    return [torch.nonzero(on & (order[:, k] == HUE_OP)).flatten() for k in range(4)]


def colour_jitter(x: torch.Tensor, params: torch.Tensor, hue_at: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Jitter a float batch (B, 3, H, W) in [0, 1] with each view's factors and op order (params (B, N_PARAMS)).
    hue_at: `hue_rows` of the params' CPU copy (computed here from `params` when None)."""
    hue_at = hue_rows(params.cpu()) if hue_at is None else hue_at
    on = params[:, JITTER_ON] > 0
    order = params[:, ORDER].long()
    factors = params[:, FACTORS]
    for position in range(4):
        op = order[:, position:position + 1]
        blend = on & (op[:, 0] != HUE_OP)  # brightness, contrast or saturation here
        f = torch.where(blend, factors.gather(1, op)[:, 0], torch.ones_like(factors[:, 0]))
        gray = _gray(x)
        target = (_per_view((blend & (op[:, 0] == 1)).to(x.dtype)) * gray.mean(dim=(1, 2, 3), keepdim=True)
                  + _per_view((blend & (op[:, 0] == 2)).to(x.dtype)) * gray)
        x = (target + _per_view(f) * (x - target)).clamp_(0, 1)
        if len(hue_at[position]):
            rows = hue_at[position].to(x.device, non_blocking=True)
            x = x.index_copy(0, rows, _hue(x.index_select(0, rows), factors[:, 3].index_select(0, rows)))
    return x


def kernel_radius(sigma: torch.Tensor) -> int:
    """The half-width covering +-3 of the largest sigma; 0 when nothing is blurred. Give it the CPU copy
    of the params: on a GPU tensor it waits for the device."""
    largest = float(sigma.max()) if sigma.numel() else 0.0
    return blur_radius(largest) if largest > 0 else 0


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int | None = None) -> torch.Tensor:
    """Blur each view with its own sigma (0: unchanged); separable, replicate border, +-3 sigma covered.
    Computes in x's dtype (the caller picks half on CUDA)."""
    radius = kernel_radius(sigma) if radius is None else radius
    if radius == 0:
        return x
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    s = sigma.float().clamp(min=1e-3).view(-1, 1)
    weights = torch.exp(-0.5 * (offsets / s) ** 2)
    delta = (offsets == 0).float().expand_as(weights)
    weights = torch.where((sigma > 0).view(-1, 1), weights / weights.sum(1, keepdim=True), delta).to(x.dtype)
    b, c, h, w = x.shape
    kernel = weights.repeat_interleave(c, dim=0)  # (B*C, K): one kernel per view, shared by its channels
    flat = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, kernel.view(b * c, 1, 1, -1), groups=b * c)
    flat = F.conv2d(flat, kernel.view(b * c, 1, -1, 1), groups=b * c)
    return flat.view(b, c, h, w)


def augment_batch(images: torch.Tensor, params: torch.Tensor, radius: int | None = None,
                  hue_at: list[torch.Tensor] | None = None) -> torch.Tensor:
    """uint8 (B, 3, H, W) and params (B, N_PARAMS) on one device -> float32 views in [0, 1], augmented.
    radius, hue_at: `kernel_radius` and `hue_rows` of the params' CPU copy; None: from params (a sync)."""
    x = images.float().div_(255)
    x = colour_jitter(x, params, hue_at)
    gray = _per_view(params[:, GRAYSCALE] > 0).to(x.dtype)
    x = torch.lerp(x, _gray(x).expand_as(x), gray)
    if x.device.type == "cuda":
        return gaussian_blur(x.half(), params[:, SIGMA], radius).float()
    return gaussian_blur(x, params[:, SIGMA], radius)


def finish_views(views, device: torch.device, memory_format=torch.contiguous_format) -> list[torch.Tensor]:
    """A loader batch of views -> float views in [0, 1] on `device`, whatever the pipeline.

    PendingViews (pipeline gpu): moved as uint8, then colour, grayscale and blur here, all views of one
    size as one batch. uint8 tensors (pipeline cpu): moved, then scaled. Float tensors: moved as they are.
    """
    if isinstance(views, PendingViews):
        return _finish_pending(views, device, memory_format)
    out = []
    for v in views:
        v = v.to(device, non_blocking=True)
        if v.dtype == torch.uint8:
            v = v.float().div_(255)
        out.append(v.contiguous(memory_format=memory_format))
    return out


def _finish_pending(views: PendingViews, device: torch.device, memory_format) -> list[torch.Tensor]:
    batch = views.params.shape[0]
    groups: dict[tuple, list[int]] = {}  # views of one size run as one batch
    for i, v in enumerate(views.images):
        groups.setdefault(tuple(v.shape[1:]), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(views.images)
    with torch.autocast(device.type, enabled=False):
        for members in groups.values():
            host = views.params[:, members].transpose(0, 1).reshape(-1, views.params.shape[-1]).float()
            images = torch.cat([views.images[i].to(device, non_blocking=True) for i in members])
            done = augment_batch(images, host.to(device, non_blocking=True), kernel_radius(host[:, SIGMA]),
                                 hue_rows(host))
            for j, i in enumerate(members):
                out[i] = done[j * batch:(j + 1) * batch].contiguous(memory_format=memory_format)
    return out


def select(views, rows: torch.Tensor):
    """The same rows of every view (PendingViews or a list of tensors), e.g. to top up a thinned batch."""
    if isinstance(views, PendingViews):
        return PendingViews([v[rows] for v in views.images], views.params[rows])
    return [v[rows] for v in views]
