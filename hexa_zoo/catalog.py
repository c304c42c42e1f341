"""The catalog of pre-training methods: the one place that lists them.

Every list of methods in the project reads from `METHODS` below: the `hexa pretrain` choices and default
recipes, the registered timm models and their tags, the model cards' papers and citations, the demo's
and the leaderboard's HEXA/baseline pairs. A method's code lives in `pretrain/<module>.py` (its class
is that module's `METHOD`); adding a method is that file, one entry here and its recipes in
`pretrain/configs/`.

Each HEXA variant names its `baseline`: its recipes are the baseline's with the hard views switched on
(`pretrain/configs/hexa_*.yaml` say `base: <baseline recipe>`; a test checks every pair).

Zoo models are `<method>_<arch short>` for the architectures in `ARCHS` (`hexa_moco_r50`). Published weights
(MoCo's and swav's files, and the field's other ResNet-50s, converted on download) are listed per model and
tag in `hexa_zoo.releases.RELEASES`; a release whose model is a method here is one the project can also train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

ARCHS = {"resnet18": "r18", "resnet50": "r50"}  # timm trunk -> the suffix of its zoo model names
EMBEDDED_TAG = "embedded"

PAPERS = {
    "hexa": dict(
        paper_ids="arXiv:2012.13493",
        paper_name="Self-supervised Pre-training with Hard Examples Improves Visual Representations",
        origin_url="https://arxiv.org/abs/2012.13493",
        citation="""@article{li2020hexa,
  title   = {Self-supervised Pre-training with Hard Examples Improves Visual Representations},
  author  = {Li, Chunyuan and Li, Xiujun and Zhang, Lei and Peng, Baolin and Zhou, Mingyuan and Gao, Jianfeng},
  journal = {arXiv preprint arXiv:2012.13493},
  year    = {2020}
}"""),
    "moco_v2": dict(
        paper_ids=("arXiv:2003.04297", "arXiv:1911.05722"),
        paper_name="Improved Baselines with Momentum Contrastive Learning",
        origin_url="https://github.com/facebookresearch/moco",
        citation="""@article{chen2020mocov2,
  title   = {Improved Baselines with Momentum Contrastive Learning},
  author  = {Chen, Xinlei and Fan, Haoqi and Girshick, Ross and He, Kaiming},
  journal = {arXiv preprint arXiv:2003.04297},
  year    = {2020}
}"""),
    "swav": dict(
        paper_ids="arXiv:2006.09882",
        paper_name="Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
        origin_url="https://github.com/facebookresearch/swav",
        citation="""@inproceedings{caron2020unsupervised,
  title     = {Unsupervised Learning of Visual Features by Contrasting Cluster Assignments},
  author    = {Caron, Mathilde and Misra, Ishan and Mairal, Julien and Goyal, Priya and Bojanowski, Piotr and Joulin, Armand},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2020}
}"""),
}


@dataclass(frozen=True)
class Method:
    """One pre-training method and everything the project says about it."""

    name: str                       # the --method value, e.g. "hexa_moco"
    title: str                      # how papers write it, e.g. "HEXA_MoCo"
    module: str                     # pretrain/<module>.py implements it (MoCo-v2 and HEXA_MoCo share one)
    paper: str                      # key of PAPERS
    summary: str                    # what a model card says the trunk was trained with
    recipes: Mapping[str, str]      # scale -> recipe name in pretrain/configs/; "embedded" is the CPU one
    paper_recipe: str               # the scale used off the embedded data when no recipe is given
    baseline: str | None = None     # for a HEXA variant: the method it adds hard views to

    @property
    def is_hexa(self) -> bool:
        return self.baseline is not None

    def default_recipe(self, data: str) -> str:
        """The recipe for `--data embedded` (the CPU one) or anything else (the paper's)."""
        return self.recipes[EMBEDDED_TAG if data == EMBEDDED_TAG else self.paper_recipe]


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("moco_v2", "MoCo-v2", "moco", "moco_v2", "MoCo-v2",
           {"embedded": "moco_v2_r18_embedded", "in1k_ep200": "moco_v2_r50_200ep", "in1k_ep800": "moco_v2_r50_800ep"},
           "in1k_ep200"),
    Method("hexa_moco", "HEXA_MoCo", "moco", "hexa", "HEXA_MoCo (MoCo-v2 plus adversarial and CutMix hard views)",
           {"embedded": "hexa_moco_r18_embedded", "in1k_ep200": "hexa_moco_r50_200ep",
            "in1k_ep800": "hexa_moco_r50_800ep"}, "in1k_ep200", baseline="moco_v2"),
    Method("dcluster_v2", "DeepCluster-v2", "deepcluster", "swav", "DeepCluster-v2",
           {"embedded": "dcluster_v2_r18_embedded", "in1k_ep400": "dcluster_v2_r50_400ep",
            "in1k_ep800": "dcluster_v2_r50_800ep"}, "in1k_ep800"),
    Method("hexa_dcluster", "HEXA_DCluster", "deepcluster", "hexa",
           "HEXA_DCluster (DeepCluster-v2 plus adversarial and CutMix hard views)",
           {"embedded": "hexa_dcluster_r18_embedded", "in1k_ep400": "hexa_dcluster_r50_400ep",
            "in1k_ep800": "hexa_dcluster_r50_800ep"}, "in1k_ep800", baseline="dcluster_v2"),
    Method("swav", "SwAV", "swav", "swav", "SwAV",
           {"embedded": "swav_r18_embedded", "in1k_ep200_bs256": "swav_r50_200ep_bs256",
            "in1k_ep800": "swav_r50_800ep"}, "in1k_ep800"),
    Method("hexa_swav", "HEXA_SwAV", "swav", "hexa", "HEXA_SwAV (SwAV plus adversarial and CutMix hard views)",
           {"embedded": "hexa_swav_r18_embedded", "in1k_ep200_bs256": "hexa_swav_r50_200ep_bs256",
            "in1k_ep800": "hexa_swav_r50_800ep"}, "in1k_ep800", baseline="swav"),
)}

# The method families: the modules implementing the methods (pretrain/<family>.py), in catalog order. Each is
# also the name of its settings' section in a recipe and a typed field of pretrain.config.PretrainConfig.
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(m.module for m in METHODS.values()))

# What a budget of 1 means for the embedded recipes (each method's recipes["embedded"]): this many passes over
# the 2000 embedded training images, for every method alike, in `hexa demo --budget` and `hexa study --budget`
# (a recipe's own `epochs` is what `hexa pretrain` runs). Measured on 2 shared CPU cores: one pass of MoCo-v2
# plus one of HEXA_MoCo about 33 s; the shrunk transfer suite about 33 s per model. It lives on the ground floor,
# beside the recipes' names, so that the demo, the study and its plan count a budget with one number.
EPOCHS_AT_BUDGET_1 = 12

def zoo_model_name(method: str, arch: str) -> str:
    """`hexa_moco` + `resnet18` -> `hexa_moco_r18`; other archs -> `<method>_<arch>` (dots, slashes as '_')."""
    short = ARCHS.get(arch)
    return f"{method}_{short}" if short else f"{method}_{arch.replace('.', '_').replace('/', '_')}"


# Registered zoo models: name -> (method, arch), in catalog order, ResNet-50 first.
MODELS: dict[str, tuple[str, str]] = {
    zoo_model_name(m.name, arch): (m.name, arch) for arch in reversed(ARCHS) for m in METHODS.values()}


def hexa_pairs() -> list[tuple[str, str]]:
    """(baseline, HEXA variant) for every HEXA method, in catalog order."""
    return [(m.baseline, m.name) for m in METHODS.values() if m.is_hexa]


def baseline_model(model: str) -> str | None:
    """`hexa_moco_r18.embedded` -> `moco_v2_r18.embedded`; None for a model that is not a HEXA variant."""
    for base, hexa in hexa_pairs():
        if model.startswith(hexa + "_"):
            return base + model[len(hexa):]
    return None


def citation(method: str) -> str | None:
    entry = METHODS.get(method)
    return PAPERS[entry.paper]["citation"] if entry else None
