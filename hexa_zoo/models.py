"""The hexa-zoo models in timm's registry, one per catalog method and architecture.

Each model is a timm ResNet trunk (`num_classes=0`: pooled features; `num_classes=N`: a fresh
head) with one pretrained_cfg per tag: preprocessing, license, paper, origin and where the weights
come from. `timm.create_model(NAME[.TAG], pretrained=True)` resolves the weights through
`hexa_zoo.loading` (local zoo, then the Hugging Face Hub, then an official release URL).

The names, tags and papers come from `hexa_zoo.catalog`, the published weights from `hexa_zoo.releases`;
this module turns each catalog model and each release-only model into a timm entry point (`hexa_moco_r50`,
`swav_r18`, `byol_r50`, ...), registered at import.

The Hub organisation is `hexa-zoo` unless `HEXA_ZOO_HF_ORG` says otherwise; repositories are
named like timm's own, `<org>/<model>.<tag>`.
"""

from __future__ import annotations

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from . import loading
from .catalog import METHODS, MODELS, PAPERS
from .layouts import LAYOUTS
from .releases import RELEASE_MODELS, RELEASES, Release, model_tags

# The timm ResNet arguments that build each catalog architecture.
ARCH_ARGS = {"resnet18": dict(block=BasicBlock, layers=(2, 2, 2, 2)),
             "resnet50": dict(block=Bottleneck, layers=(3, 4, 6, 3))}


def _release_notes(release: Release) -> tuple[str, ...]:
    return tuple(n for n in (f"{release.epochs} epochs, ImageNet linear top-1 {release.top1} ({release.top1_source})",
                             release.notes, f"checksum: {release.checksum or 'none published'}") if n)


def _cfg(name: str, tag: str) -> dict:
    release = RELEASES.get(f"{name}.{tag}")
    embedded = tag == "embedded"
    if name in MODELS:
        method, arch = MODELS[name]
        entry = METHODS[method]
        paper = {k: v for k, v in PAPERS[entry.paper].items() if k != "citation"}
        summary = entry.summary
    else:  # a release only: its paper is the release's
        arch, summary = RELEASE_MODELS[name], release.method
        paper = dict(paper_ids=release.paper, origin_url=release.repository)
    if release:
        origin, license_ = f"{release.source}; converted by hexa_zoo.convert", release.license
        notes = _release_notes(release)
    elif not METHODS[method].is_hexa:
        origin, license_, notes = "trained with this project's re-implementation (hexa pretrain)", "mit", ()
    else:
        origin, license_, notes = "trained with hexa pretrain (the HEXA paper released no weights)", "mit", ()
    data = "the embedded synthetic dataset (64 px)" if embedded else "ImageNet-1k train, no labels"
    # SimCLR's converted TF checkpoints take pixels in [0, 1] (the converters' own evaluation scripts, and
    # ssl-transfer's --no-norm for them): their preprocessing, and so every transfer protocol's, normalises nothing.
    raw_pixels = bool(release) and LAYOUTS[release.layout].unnormalized_input
    return dict(
        url=release.url if release else None,
        # Only a release is a source timm may list: `timm.list_models(pretrained=True)` means
        # "weights you can load", and this project has pushed no Hub repository. The Hub and the local
        # zoo are still searched at load time (hexa_zoo.loading.find_weights).
        hf_hub_id=None,
        num_classes=0,
        input_size=(3, 64, 64) if embedded else (3, 224, 224),
        pool_size=(2, 2) if embedded else (7, 7),
        crop_pct=1.0 if embedded else 0.875,
        interpolation="bilinear",
        mean=(0.0, 0.0, 0.0) if raw_pixels else IMAGENET_DEFAULT_MEAN,
        std=(1.0, 1.0, 1.0) if raw_pixels else IMAGENET_DEFAULT_STD,
        first_conv="conv1",
        classifier="fc",
        license=license_,
        description=f"{arch} trunk pre-trained with {summary} on {data}; {origin}.",
        notes=notes or None,
        **paper,
    )


ZOO_NAMES = (*MODELS, *RELEASE_MODELS)
default_cfgs = generate_default_cfgs({f"{name}.{tag}": _cfg(name, tag) for name in ZOO_NAMES for tag in model_tags(name)})


def _entry_point(name: str):
    """The timm entry point of one catalog model (what `@register_model` registers under `name`)."""
    arch = MODELS[name][1] if name in MODELS else RELEASE_MODELS[name]
    summary = METHODS[MODELS[name][0]].summary if name in MODELS else RELEASES[f"{name}.{model_tags(name)[0]}"].method

    def create(pretrained: bool = False, **kwargs) -> ResNet:
        return loading.build_model(name, ARCH_ARGS[arch], pretrained, **kwargs)

    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f"{arch} trunk pre-trained with {summary}."
    return create


for _name in ZOO_NAMES:
    globals()[_name] = register_model(_entry_point(_name))
del _name
