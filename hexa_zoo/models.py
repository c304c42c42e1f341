"""The hexa-zoo models in timm's registry.

Each model is a timm ResNet trunk (`num_classes=0`: pooled features; `num_classes=N`: a fresh
head) with one pretrained_cfg per tag: preprocessing, license, paper, origin and where the weights
come from. `timm.create_model(NAME[.TAG], pretrained=True)` resolves the weights through
`hexa_zoo.weights` (local zoo, then the Hugging Face Hub, then an official release URL).

The Hub organisation is `hexa-zoo` unless `HEXA_ZOO_HF_ORG` says otherwise; repositories are
named like timm's own, `<org>/<model>.<tag>`.
"""

from __future__ import annotations

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import register_model
from timm.models._registry import generate_default_cfgs
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from . import weights

# Trunk architecture of each registered model, and the timm ResNet arguments that build it.
ARCHS = {"resnet18": dict(block=BasicBlock, layers=(2, 2, 2, 2)),
         "resnet50": dict(block=Bottleneck, layers=(3, 4, 6, 3))}
MODELS = {  # name -> (method, arch)
    "hexa_moco_r50": ("hexa_moco", "resnet50"),
    "hexa_dcluster_r50": ("hexa_dcluster", "resnet50"),
    "moco_v2_r50": ("moco_v2", "resnet50"),
    "dcluster_v2_r50": ("dcluster_v2", "resnet50"),
    "swav_r50": ("swav", "resnet50"),
    "hexa_moco_r18": ("hexa_moco", "resnet18"),
    "hexa_dcluster_r18": ("hexa_dcluster", "resnet18"),
    "moco_v2_r18": ("moco_v2", "resnet18"),
    "dcluster_v2_r18": ("dcluster_v2", "resnet18"),
}

_PAPERS = {
    "hexa": dict(paper_ids="arXiv:2012.13493", paper_name="Self-supervised Pre-training with Hard Examples "
                 "Improves Visual Representations", origin_url="https://arxiv.org/abs/2012.13493"),
    "moco_v2": dict(paper_ids=("arXiv:2003.04297", "arXiv:1911.05722"), paper_name="Improved Baselines with "
                    "Momentum Contrastive Learning", origin_url="https://github.com/facebookresearch/moco"),
    "swav": dict(paper_ids="arXiv:2006.09882", paper_name="Unsupervised Learning of Visual Features by "
                 "Contrasting Cluster Assignments", origin_url="https://github.com/facebookresearch/swav"),
}
_METHOD_PAPER = {"hexa_moco": "hexa", "hexa_dcluster": "hexa", "moco_v2": "moco_v2",
                 "dcluster_v2": "swav", "swav": "swav"}
_METHOD_TEXT = {
    "hexa_moco": "HEXA_MoCo (MoCo-v2 plus adversarial and CutMix hard views)",
    "hexa_dcluster": "HEXA_DCluster (DeepCluster-v2 plus adversarial and CutMix hard views)",
    "moco_v2": "MoCo-v2",
    "dcluster_v2": "DeepCluster-v2",
    "swav": "SwAV",
}
_FAIR = "https://dl.fbaipublicfiles.com"
# Official releases: (url, md5 prefix published beside it or None, notes). The MoCo md5 prefixes are
# those of the MoCo README's model table; the SwAV repository publishes none.
OFFICIAL = {
    "moco_v2_r50.in1k_ep800": (f"{_FAIR}/moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar",
                               "a04e12f8", "800 epochs, ImageNet linear top-1 71.1"),
    "moco_v2_r50.in1k_ep200": (f"{_FAIR}/moco/moco_checkpoints/moco_v2_200ep/moco_v2_200ep_pretrain.pth.tar",
                               "59fd9945", "200 epochs, ImageNet linear top-1 67.7"),
    "dcluster_v2_r50.in1k_ep800": (f"{_FAIR}/deepcluster/deepclusterv2_800ep_pretrain.pth.tar", None,
                                   "800 epochs, 2x224 + 6x96 crops, ImageNet linear top-1 75.2"),
    "dcluster_v2_r50.in1k_ep400": (f"{_FAIR}/deepcluster/deepclusterv2_400ep_pretrain.pth.tar", None,
                                   "400 epochs, 2x160 + 4x96 crops, ImageNet linear top-1 74.3"),
    "dcluster_v2_r50.in1k_ep400_2x224": (f"{_FAIR}/deepcluster/deepclusterv2_400ep_2x224_pretrain.pth.tar", None,
                                         "400 epochs, 2x224 crops, ImageNet linear top-1 70.2"),
    "swav_r50.in1k_ep800": (f"{_FAIR}/deepcluster/swav_800ep_pretrain.pth.tar", None,
                            "800 epochs, 2x224 + 6x96 crops, ImageNet linear top-1 75.3"),
    "swav_r50.in1k_ep400": (f"{_FAIR}/deepcluster/swav_400ep_pretrain.pth.tar", None,
                            "400 epochs, 2x224 + 6x96 crops, ImageNet linear top-1 74.6"),
    "swav_r50.in1k_ep200": (f"{_FAIR}/deepcluster/swav_200ep_pretrain.pth.tar", None,
                            "200 epochs, 2x224 + 6x96 crops, ImageNet linear top-1 73.9"),
    "swav_r50.in1k_ep100": (f"{_FAIR}/deepcluster/swav_100ep_pretrain.pth.tar", None,
                            "100 epochs, 2x224 + 6x96 crops, ImageNet linear top-1 72.1"),
}
# Tags in registry order; the first is the default (`timm.create_model(NAME, pretrained=True)`).
TAGS = {
    "hexa_moco_r50": ("in1k_ep800", "in1k_ep200", "embedded"),
    "hexa_dcluster_r50": ("in1k_ep800", "in1k_ep400", "embedded"),
    "moco_v2_r50": ("in1k_ep800", "in1k_ep200", "embedded"),
    "dcluster_v2_r50": ("in1k_ep800", "in1k_ep400", "in1k_ep400_2x224", "embedded"),
    "swav_r50": ("in1k_ep800", "in1k_ep400", "in1k_ep200", "in1k_ep100"),
    "hexa_moco_r18": ("embedded",),
    "hexa_dcluster_r18": ("embedded",),
    "moco_v2_r18": ("embedded",),
    "dcluster_v2_r18": ("embedded",),
}


def model_for_method(method: str, arch: str) -> str | None:
    """The registered model a pre-training run publishes to (`hexa_moco` + `resnet18` -> `hexa_moco_r18`)."""
    for name, spec in MODELS.items():
        if spec == (method, arch):
            return name
    return None


def _cfg(name: str, tag: str) -> dict:
    method, arch = MODELS[name]
    paper = _PAPERS[_METHOD_PAPER[method]]
    official = OFFICIAL.get(f"{name}.{tag}")
    embedded = tag == "embedded"
    if official:
        origin, license_ = "official release, converted by hexa_zoo.convert", "cc-by-nc-4.0"
        notes = (official[2], f"md5 prefix {official[1]}" if official[1] else "no published checksum")
    elif method in ("moco_v2", "dcluster_v2"):
        origin, license_, notes = "trained with this project's re-implementation (hexa pretrain)", "mit", ()
    else:
        origin, license_, notes = "trained with hexa pretrain (the HEXA paper released no weights)", "mit", ()
    data = "the embedded synthetic dataset (64 px)" if embedded else "ImageNet-1k train, no labels"
    return dict(
        url=official[0] if official else None,
        hf_hub_id=weights.hub_repo_id(name, tag),
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
        description=f"{arch} trunk pre-trained with {_METHOD_TEXT[method]} on {data}; {origin}.",
        notes=notes or None,
        **paper,
    )


default_cfgs = generate_default_cfgs({f"{name}.{tag}": _cfg(name, tag) for name in MODELS for tag in TAGS[name]})


def _create(name: str, pretrained: bool, **kwargs) -> ResNet:
    return weights.build_model(name, ARCHS[MODELS[name][1]], pretrained, **kwargs)


@register_model
def hexa_moco_r50(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-50 trunk pre-trained with HEXA_MoCo."""
    return _create("hexa_moco_r50", pretrained, **kwargs)


@register_model
def hexa_dcluster_r50(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-50 trunk pre-trained with HEXA_DCluster."""
    return _create("hexa_dcluster_r50", pretrained, **kwargs)


@register_model
def moco_v2_r50(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-50 trunk pre-trained with MoCo-v2 (official release or hexa pretrain)."""
    return _create("moco_v2_r50", pretrained, **kwargs)


@register_model
def dcluster_v2_r50(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-50 trunk pre-trained with DeepCluster-v2 (official release or hexa pretrain)."""
    return _create("dcluster_v2_r50", pretrained, **kwargs)


@register_model
def swav_r50(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-50 trunk pre-trained with SwAV (official release)."""
    return _create("swav_r50", pretrained, **kwargs)


@register_model
def hexa_moco_r18(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18 trunk pre-trained with HEXA_MoCo (CPU-scale runs)."""
    return _create("hexa_moco_r18", pretrained, **kwargs)


@register_model
def hexa_dcluster_r18(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18 trunk pre-trained with HEXA_DCluster (CPU-scale runs)."""
    return _create("hexa_dcluster_r18", pretrained, **kwargs)


@register_model
def moco_v2_r18(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18 trunk pre-trained with MoCo-v2 (CPU-scale runs)."""
    return _create("moco_v2_r18", pretrained, **kwargs)


@register_model
def dcluster_v2_r18(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18 trunk pre-trained with DeepCluster-v2 (CPU-scale runs)."""
    return _create("dcluster_v2_r18", pretrained, **kwargs)
