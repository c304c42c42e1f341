"""The hexa-zoo models in timm's registry, one per catalog method and architecture.

Each model is a timm ResNet trunk (`num_classes=0`: pooled features; `num_classes=N`: a fresh
head) with one pretrained_cfg per tag: preprocessing, license, paper, origin and where the weights
come from. `timm.create_model(NAME[.TAG], pretrained=True)` resolves the weights through
`hexa_zoo.weights` (local zoo, then the Hugging Face Hub, then an official release URL).

The names, tags, papers and official releases come from `hexa_zoo.catalog`; this module turns each
catalog model into a timm entry point (`hexa_moco_r50`, `swav_r18`, ...), registered at import.

The Hub organisation is `hexa-zoo` unless `HEXA_ZOO_HF_ORG` says otherwise; repositories are
named like timm's own, `<org>/<model>.<tag>`.
"""

from __future__ import annotations

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from . import weights
from .catalog import METHODS, MODELS, OFFICIAL, PAPERS, model_tags

# The timm ResNet arguments that build each catalog architecture.
ARCH_ARGS = {"resnet18": dict(block=BasicBlock, layers=(2, 2, 2, 2)),
             "resnet50": dict(block=Bottleneck, layers=(3, 4, 6, 3))}


def _cfg(name: str, tag: str) -> dict:
    method, arch = MODELS[name]
    entry = METHODS[method]
    paper = {k: v for k, v in PAPERS[entry.paper].items() if k != "citation"}
    official = OFFICIAL.get(f"{name}.{tag}")
    embedded = tag == "embedded"
    if official:
        origin, license_ = "official release, converted by hexa_zoo.convert", "cc-by-nc-4.0"
        notes = (official[2], f"md5 prefix {official[1]}" if official[1] else "no published checksum")
    elif not entry.is_hexa:
        origin, license_, notes = "trained with this project's re-implementation (hexa pretrain)", "mit", ()
    else:
        origin, license_, notes = "trained with hexa pretrain (the HEXA paper released no weights)", "mit", ()
    data = "the embedded synthetic dataset (64 px)" if embedded else "ImageNet-1k train, no labels"
    return dict(
        url=official[0] if official else None,
        # Only an official release is a source timm may list: `timm.list_models(pretrained=True)` means
        # "weights you can load", and this project has pushed no Hub repository. The Hub and the local
        # zoo are still searched at load time (hexa_zoo.weights.find_weights).
        hf_hub_id=None,
        num_classes=0,
        input_size=(3, 64, 64) if embedded else (3, 224, 224),
        pool_size=(2, 2) if embedded else (7, 7),
        crop_pct=1.0 if embedded else 0.875,
        interpolation="bilinear",
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        first_conv="conv1",
        classifier="fc",
        license=license_,
        description=f"{arch} trunk pre-trained with {entry.summary} on {data}; {origin}.",
        notes=notes or None,
        **paper,
    )


default_cfgs = generate_default_cfgs({f"{name}.{tag}": _cfg(name, tag) for name in MODELS for tag in model_tags(name)})


def _entry_point(name: str):
    """The timm entry point of one catalog model (what `@register_model` registers under `name`)."""
    method, arch = MODELS[name]

    def create(pretrained: bool = False, **kwargs) -> ResNet:
        return weights.build_model(name, ARCH_ARGS[arch], pretrained, **kwargs)

    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f"{arch} trunk pre-trained with {METHODS[method].summary}."
    return create


for _name in MODELS:
    globals()[_name] = register_model(_entry_point(_name))
del _name
