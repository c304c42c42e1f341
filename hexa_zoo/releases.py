"""The field's published ResNet-50 weights: one `Release` per zoo model and tag, the one table of them.

Every model of ssl-transfer's tables (Ericsson et al., CVPR 2021) and the self-supervised ResNet-50s released
since (Barlow Twins, VICReg, DINO, MoCo-v3, SimSiam), each with the URL its authors (or, for TF / JAX
originals, the PyTorch conversion ssl-transfer names) publish, the file's layout for `hexa_zoo.convert`, the
license, the checksum published beside it and the published ImageNet linear top-1. `method` is the method's
name exactly as the leaderboard's published rows write it. Which releases the project can also train is the
catalog's business (`hexa_zoo.catalog.METHODS`): `Release.trainable` reads it; the others are releases only
and `hexa pretrain` does not offer them.

A release whose `convert_with` is set is not a PyTorch file at its URL (SimCLR's TF checkpoints, BYOL's JAX
pickle): the named tool turns it into a file of `layout`, which `hexa zoo fetch NAME --file PATH` takes.
Per method, the first release listed is the one ssl-transfer evaluated (or, for the newer methods, the
longest schedule); `release_for(method, None)` returns it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import EMBEDDED_TAG, METHODS, MODELS

_FAIR = "https://dl.fbaipublicfiles.com"
_PYCONTRAST = "https://www.dropbox.com/sh/87d24jqsl6ra7t2"
_SSL_TRANSFER = "ssl-transfer Table 1 (Ericsson et al., CVPR 2021, arXiv:2011.13377)"
ARCH = "resnet50"  # every release is a ResNet-50 trunk


@dataclass(frozen=True)
class Release:
    """One published set of weights and what its authors say about it."""

    model: str                 # zoo model name, e.g. "byol_r50"
    tag: str                   # e.g. "in1k_ep1000"
    method: str                # as the leaderboard's published rows write it, e.g. "BYOL"
    epochs: int                # pre-training epochs on ImageNet-1k
    layout: str                # hexa_zoo.convert layout of the file fetched (after `convert_with`, if any)
    url: str                   # where the authors (or the conversion) publish it
    source: str                # "owner/name ...": the official repository, or the conversion used and by whom
    paper: str                 # arXiv id
    license: str               # Hub license identifier of the repository the weights come from
    checksum: str | None       # "md5:<prefix>" / "sha256:<prefix>" published beside the file, None if none
    top1: float                # published ImageNet linear top-1
    top1_source: str
    redistribution: str | None = None  # None: the license allows a mirror; else why it does not
    convert_with: str | None = None    # external tool from the URL's file to `layout` (TF / JAX originals)
    notes: str = ""
    aliases: tuple[str, ...] = ()      # other names published tables give the method ("SimCLR" for SimCLR-v1)

    def is_method(self, method: str) -> bool:
        """Whether a published row's method names this release's (spaces, hyphens and case aside:
        "MoCo v2", "MoCo-v2"), or one of its aliases."""
        return _folded(method) in {_folded(m) for m in (self.method, *self.aliases)}

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    @property
    def repository(self) -> str:
        return f"https://github.com/{self.source.split()[0]}"

    @property
    def arch(self) -> str:
        return ARCH

    @property
    def catalog_method(self) -> str | None:
        """The `hexa pretrain --method` that trains this model, or None for a release only."""
        return MODELS[self.model][0] if self.model in MODELS else None

    @property
    def trainable(self) -> bool:
        return self.catalog_method is not None


def _folded(method: str) -> str:
    return method.lower().replace(" ", "").replace("-", "")


def _r(model, tag, method, epochs, layout, url, source, paper, license_, checksum, top1, top1_source, **kw) -> Release:
    return Release(model, tag, method, epochs, layout, url, source, paper, license_, checksum, top1, top1_source, **kw)


_MOCO = "facebookresearch/moco (official)"
_MOCO_README = "facebookresearch/moco README"
_SWAV = "facebookresearch/swav (official)"
_SWAV_README = "facebookresearch/swav README"
_CC = "cc-by-nc-4.0"

RELEASES: dict[str, Release] = {r.name: r for r in (
    # --- ssl-transfer's 14, in its Table 1 order (the release it evaluated first per method)
    _r("insdis_r50", "in1k_ep200", "InsDis", 200, "pycontrast",
       f"{_PYCONTRAST}/AACcsSIt1_Njv7GsmsuzZ6Sta/InsDis.pth",
       "HobbitLong/PyContrast re-implementation (Yonglong Tian), the file ssl-transfer used", "arXiv:1805.01978",
       "bsd-2-clause", None, 59.5, _SSL_TRANSFER),
    _r("moco_v1_r50", "in1k_ep200", "MoCo-v1", 200, "moco",
       f"{_FAIR}/moco/moco_checkpoints/moco_v1_200ep/moco_v1_200ep_pretrain.pth.tar", _MOCO, "arXiv:1911.05722",
       _CC, "md5:b251726a", 60.6, _SSL_TRANSFER),
    _r("pcl_v1_r50", "in1k_ep200", "PCL-v1", 200, "moco",
       "https://storage.googleapis.com/sfr-pcl-data-research/PCL_checkpoint/PCL_v1_epoch200.pth.tar",
       "salesforce/PCL (official)", "arXiv:2005.04966", "mit", None, 61.5, _SSL_TRANSFER),
    _r("pirl_r50", "in1k_ep200", "PIRL", 200, "pycontrast",
       f"{_PYCONTRAST}/AADN4jKnvTI0U5oT6hTmQZz8a/PIRL.pth",
       "HobbitLong/PyContrast re-implementation (Yonglong Tian), the file ssl-transfer used", "arXiv:1912.01991",
       "bsd-2-clause", None, 61.7, _SSL_TRANSFER),
    _r("pcl_v2_r50", "in1k_ep200", "PCL-v2", 200, "moco",
       "https://storage.googleapis.com/sfr-pcl-data-research/PCL_checkpoint/PCL_v2_epoch200.pth.tar",
       "salesforce/PCL (official)", "arXiv:2005.04966", "mit", None, 67.6, _SSL_TRANSFER),
    _r("simclr_v1_r50", "in1k_ep1000", "SimCLR-v1", 1000, "simclr_v1",
       "https://storage.cloud.google.com/simclr-gcs/checkpoints/ResNet50_1x.zip",
       "google-research/simclr TF checkpoint, converted with tonylins/simclr-converter (as ssl-transfer did)",
       "arXiv:2002.05709", "apache-2.0", None, 69.3, _SSL_TRANSFER, aliases=("SimCLR",),
       notes="the simclr README gives 69.1 for this checkpoint, ssl-transfer quotes the paper's 69.3; epochs are the "
             "paper's (the README does not say)",
       convert_with="tonylins/simclr-converter (TensorFlow checkpoint -> PyTorch state dict)"),
    _r("moco_v2_r50", "in1k_ep800", "MoCo-v2", 800, "moco",
       f"{_FAIR}/moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar", _MOCO, "arXiv:2003.04297",
       _CC, "md5:a04e12f8", 71.1, _SSL_TRANSFER),
    _r("simclr_v2_r50", "in1k_ep800", "SimCLR-v2", 800, "simclr_v2",
       "https://console.cloud.google.com/storage/browser/simclr-checkpoints/simclrv2/pretrained/r50_1x_sk0",
       "google-research/simclr (v2) TF checkpoint, converted with Separius/SimCLRv2-Pytorch (as ssl-transfer did)",
       "arXiv:2006.10029", "apache-2.0", None, 71.7, _SSL_TRANSFER,
       convert_with="Separius/SimCLRv2-Pytorch (TensorFlow checkpoint -> r50_1x_sk0.pth)"),
    _r("sela_v2_r50", "in1k_ep400", "SeLa-v2", 400, "swav",
       f"{_FAIR}/deepcluster/selav2_400ep_pretrain.pth.tar", _SWAV, "arXiv:2006.09882", _CC, None, 71.8,
       _SSL_TRANSFER, notes="2x160 + 4x96 crops"),
    _r("infomin_r50", "in1k_ep800", "InfoMin", 800, "pycontrast",
       f"{_PYCONTRAST}/AAAzMTynP3Qc8mIE4XWkgILUa/InfoMin_800.pth",
       "HobbitLong/PyContrast (official, Yonglong Tian)", "arXiv:2005.10243", "bsd-2-clause", None, 73.0,
       _SSL_TRANSFER),
    _r("byol_r50", "in1k_ep1000", "BYOL", 1000, "byol",
       "https://storage.googleapis.com/deepmind-byol/checkpoints/pretrain_res50x1.pkl",
       "deepmind/deepmind-research byol JAX checkpoint, converted with ajtejankar/byol-convert",
       "arXiv:2006.07733", "apache-2.0", None, 74.3, _SSL_TRANSFER,
       convert_with="ajtejankar/byol-convert (python convert.py pretrain_res50x1.pkl pretrain_res50x1.pth.tar)",
       notes="deepmind-research's byol README: 'should evaluate to ~74.4%'; ssl-transfer quotes the paper's 74.3; "
             "epochs are the paper's 1000 (the README does not say)"),
    _r("dcluster_v2_r50", "in1k_ep800", "DeepCluster-v2", 800, "dcluster_v2",
       f"{_FAIR}/deepcluster/deepclusterv2_800ep_pretrain.pth.tar", _SWAV, "arXiv:2006.09882", _CC, None, 75.2,
       _SSL_TRANSFER, notes="2x224 + 6x96 crops"),
    _r("swav_r50", "in1k_ep800", "SwAV", 800, "swav",
       f"{_FAIR}/deepcluster/swav_800ep_pretrain.pth.tar", _SWAV, "arXiv:2006.09882", _CC, None, 75.3,
       _SSL_TRANSFER, notes="2x224 + 6x96 crops"),
    _r("supervised_r50", "in1k_ep90", "Supervised", 90, "timm",
       "https://download.pytorch.org/models/resnet50-0676ba61.pth",
       "pytorch/vision resnet50 IMAGENET1K_V1 (what ssl-transfer's resnet50(pretrained=True) loads)",
       "arXiv:1512.03385", "bsd-3-clause", "sha256:0676ba61", 77.2, _SSL_TRANSFER,
       notes="torchvision's file name carries the first 8 hex digits of its sha256, which torch.hub checks; "
             "torchvision's docs give 76.13 top-1 for these weights, ssl-transfer quotes 77.2"),
    # --- released since, as the methods' READMEs list them
    _r("barlowtwins_r50", "in1k_ep1000", "Barlow Twins", 1000, "timm",
       f"{_FAIR}/barlowtwins/epochs1000_bs2048_lr0.2_lambd0.0051_proj_8192_8192_8192_scale0.024/resnet50.pth",
       "facebookresearch/barlowtwins (official)", "arXiv:2103.03230", _CC, None, 73.3,
       "facebookresearch/barlowtwins README"),
    _r("vicreg_r50", "in1k_ep1000", "VICReg", 1000, "timm", f"{_FAIR}/vicreg/resnet50.pth",
       "facebookresearch/vicreg (official)", "arXiv:2105.04906", "mit", None, 73.2, "facebookresearch/vicreg README",
       notes="epochs from the README's 1000-epoch SLURM recipe; the README does not name the released run's"),
    _r("dino_r50", "in1k_ep800", "DINO", 800, "timm",
       f"{_FAIR}/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth", "facebookresearch/dino (official)",
       "arXiv:2104.14294", "apache-2.0", None, 75.3, "facebookresearch/dino README",
       notes="the README gives no epochs for the ResNet-50 (its args.txt beside the weights does)"),
    _r("moco_v3_r50", "in1k_ep1000", "MoCo-v3", 1000, "moco_v3", f"{_FAIR}/moco-v3/r-50-1000ep/r-50-1000ep.pth.tar",
       "facebookresearch/moco-v3 (official)", "arXiv:2104.02057", _CC, None, 74.6, "facebookresearch/moco-v3 CONFIG.md"),
    _r("simsiam_r50", "in1k_ep100", "SimSiam", 100, "simsiam",
       f"{_FAIR}/simsiam/models/100ep/pretrain/checkpoint_0099.pth.tar", "facebookresearch/simsiam (official)",
       "arXiv:2011.10566", _CC, None, 68.1, "facebookresearch/simsiam README"),
    # --- shorter schedules of the same releases
    _r("moco_v2_r50", "in1k_ep200", "MoCo-v2", 200, "moco",
       f"{_FAIR}/moco/moco_checkpoints/moco_v2_200ep/moco_v2_200ep_pretrain.pth.tar", _MOCO, "arXiv:2003.04297",
       _CC, "md5:59fd9945", 67.7, _MOCO_README),
    _r("dcluster_v2_r50", "in1k_ep400", "DeepCluster-v2", 400, "dcluster_v2",
       f"{_FAIR}/deepcluster/deepclusterv2_400ep_pretrain.pth.tar", _SWAV, "arXiv:2006.09882", _CC, None, 74.3,
       _SWAV_README, notes="2x160 + 4x96 crops"),
    _r("dcluster_v2_r50", "in1k_ep400_2x224", "DeepCluster-v2", 400, "dcluster_v2",
       f"{_FAIR}/deepcluster/deepclusterv2_400ep_2x224_pretrain.pth.tar", _SWAV, "arXiv:2006.09882", _CC, None,
       70.2, _SWAV_README, notes="2x224 crops"),
    _r("swav_r50", "in1k_ep400", "SwAV", 400, "swav", f"{_FAIR}/deepcluster/swav_400ep_pretrain.pth.tar", _SWAV,
       "arXiv:2006.09882", _CC, None, 74.6, _SWAV_README, notes="2x224 + 6x96 crops"),
    _r("swav_r50", "in1k_ep200", "SwAV", 200, "swav", f"{_FAIR}/deepcluster/swav_200ep_pretrain.pth.tar", _SWAV,
       "arXiv:2006.09882", _CC, None, 73.9, _SWAV_README, notes="2x224 + 6x96 crops"),
    _r("swav_r50", "in1k_ep100", "SwAV", 100, "swav", f"{_FAIR}/deepcluster/swav_100ep_pretrain.pth.tar", _SWAV,
       "arXiv:2006.09882", _CC, None, 72.1, _SWAV_README, notes="2x224 + 6x96 crops"),
    _r("moco_v3_r50", "in1k_ep300", "MoCo-v3", 300, "moco_v3", f"{_FAIR}/moco-v3/r-50-300ep/r-50-300ep.pth.tar",
       "facebookresearch/moco-v3 (official)", "arXiv:2104.02057", _CC, None, 72.8, "facebookresearch/moco-v3 CONFIG.md"),
    _r("moco_v3_r50", "in1k_ep100", "MoCo-v3", 100, "moco_v3", f"{_FAIR}/moco-v3/r-50-100ep/r-50-100ep.pth.tar",
       "facebookresearch/moco-v3 (official)", "arXiv:2104.02057", _CC, None, 68.9, "facebookresearch/moco-v3 CONFIG.md"),
)}

# Zoo models that are releases only (no catalog method): name -> timm architecture, in table order.
RELEASE_MODELS: dict[str, str] = {r.model: r.arch for r in RELEASES.values() if r.model not in MODELS}
# Every registered zoo model name -> its timm architecture: the catalog's, then the releases-only ones.
ZOO_MODELS: dict[str, str] = {**{name: arch for name, (_, arch) in MODELS.items()}, **RELEASE_MODELS}


def release_tags(model: str) -> tuple[str, ...]:
    """The tags of `model` that have a release, in table order (the default first)."""
    return tuple(r.tag for r in RELEASES.values() if r.model == model)


def _epochs(tag: str) -> int:
    digits = tag.split("_ep", 1)[1].split("_")[0] if "_ep" in tag else "0"
    return int(digits) if digits.isdigit() else 0


def model_tags(name: str) -> tuple[str, ...]:
    """A registered model's tags, the default first. A catalog ResNet-50 has the ImageNet tags of its releases and
    recipes, longest schedule first, then "embedded"; a catalog ResNet-18 "embedded"; a release-only model the
    tags of its releases, in table order."""
    if name not in MODELS:
        return release_tags(name)
    method, arch = MODELS[name]
    if arch != ARCH:
        return (EMBEDDED_TAG,)
    scales = [s for s in METHODS[method].recipes if s != EMBEDDED_TAG]
    tags = list(dict.fromkeys(list(release_tags(name)) + scales))
    return tuple(sorted(tags, key=lambda t: -_epochs(t))) + (EMBEDDED_TAG,)


def release_for(method: str, epochs: int | str | None = None) -> Release | None:
    """The release of a published row's method (`"BYOL"`, `"MoCo-v2"`, also spelt `"MoCo v2"`): of `epochs` when
    given, else the first listed (the one ssl-transfer evaluated, for its 14). None when the zoo has none."""
    if epochs not in (None, "") and not str(epochs).isdigit():
        return None
    for r in RELEASES.values():
        if r.is_method(method) and (epochs in (None, "") or r.epochs == int(epochs)):
            return r
    return None


def release_by_url(url: str) -> Release | None:
    return next((r for r in RELEASES.values() if r.url == url), None)
