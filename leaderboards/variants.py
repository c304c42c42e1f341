"""Protocol variants: which protocol measured each number, and which numbers may share a table.

A benchmark (say `voc07_lowshot_svm`) names a task; a *variant* names the code that measured it, because
two codes can report the same task under the same name and still measure different things (PCL's
`eval_svm_voc.py` pools the k positives of all classes into one training set, keeps no 19k negatives,
counts difficult images as negatives and stops at k = 16; VISSL's protocol does none of that). Every
published row names its variant (`published.csv`'s `protocol` column); our records name a protocol and a
preset, and `OUR_PRESETS` says which variant each preset reproduces. A variant that is `separate` gets a
table of its own (`<benchmark>_<variant>`, or one table `<variant>` for all its benchmarks when it `fold`s),
labelled with why; the others share the benchmark's table.

The leaderboard reads records, it does not run protocols, so this table restates what the transfer
protocols' presets follow (their docstrings and the README protocol table say the same) rather than
importing them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    code: str            # where the protocol is defined: repository and file
    what: str            # what it measures, in a line
    separate: str = ""   # non-empty: why its rows cannot sit beside the benchmark's others (then a table of its own)
    fold: str = ""       # a separate variant's benchmarks all in one table `<variant>` (a column each), on this data


VARIANTS: dict[str, Variant] = {
    "moco-lincls": Variant("facebookresearch/moco main_lincls.py",
                           "frozen trunk, SGD linear classifier (lr 30, 100 epochs), top-1 of a 224 centre crop"),
    "swav-eval_linear": Variant("facebookresearch/swav eval_linear.py",
                                "frozen trunk, linear classifier on ImageNet train, top-1 of a 224 centre crop "
                                "(swav's optimiser recipe; the field compares it with main_lincls)"),
    "simclr": Variant("google-research/simclr",
                      "SimCLR's linear evaluation and fine-tuning on its 1%/10% subsets"),
    "swav-semisup": Variant("facebookresearch/swav eval_semisup.py",
                            "fine-tune all layers on the SimCLR 1%/10% subsets (numbers of other methods as "
                            "the SwAV paper's Table 2 quotes them)"),
    "dino-knn": Variant("facebookresearch/dino eval_knn.py", "weighted kNN on L2-normalised features, T 0.07"),
    "vissl": Variant("facebookresearch/vissl svm_utils (Goyal et al. 2019)",
                     "per class k positives and 19k negatives, 5 samples, LinearSVC, all-points AP"),
    "pcl": Variant("salesforce/PCL eval_svm_voc.py",
                   "low-shot SVMs on the k positives of all classes pooled (no 19k negatives), difficult "
                   "images as negatives, k <= 16",
                   separate="PCL's training sets and negatives differ from VISSL's low-shot protocol "
                            "(issue 13, departure 3): not comparable with the `vissl` rows"),
    "moco-detectron2": Variant("facebookresearch/moco detection/configs",
                               "detectron2 R50-C4 (extra res5 norm), VOC 07+12 24k iterations / COCO 1x"),
    "esvit": Variant("EsViT paper (Li et al. 2021), quoting Mask R-CNN R50-C4 1x",
                     "COCO Mask R-CNN R50-C4 1x as quoted by EsViT; its Supervised pair (38.2 / 33.3) equals "
                     "the MoCo paper's R50-C4 1x row, MoCo's detectron2 protocol"),
    # Ericsson, Gouk, Hospedales, "How Well Do Self-Supervised Models Transfer?" (CVPR 2021): one variant per
    # evaluation, each with the constants of its script in linusericsson/ssl-transfer.
    "ssl-transfer-linear": Variant("linusericsson/ssl-transfer linear.py",
                                   "frozen avgpool features (Resize 224 bicubic + CenterCrop 224), L-BFGS multinomial "
                                   "logistic regression, C = 1/wd over 45 wd in logspace(-6, 5) picked on the val "
                                   "split, refit on train+val; mean per-class accuracy on Aircraft, Caltech101, "
                                   "Flowers, Pets, 11-point mAP on VOC2007, top-1 on the rest"),
    "ssl-transfer-finetune": Variant("linusericsson/ssl-transfer finetune.py",
                                     "all layers fine-tuned: SGD Nesterov (momentum 0.9), cosine, 5000 steps, batch "
                                     "64, lr in logspace(-4, -1, 4) x wd in {0} and logspace(-6, -3, 4)/lr picked on "
                                     "val; the linear protocol's metric per dataset"),
    "ssl-transfer-fewshot": Variant("linusericsson/ssl-transfer few_shot.py",
                                    "5-way K-shot episodes (K 5, 20, 50), 15 queries per class, 600 episodes; "
                                    "prototypes of unnormalised frozen features, squared Euclidean distance; "
                                    "± is the 95% interval 1.96 std / sqrt(600)"),
    "ssl-transfer-detection": Variant("linusericsson/ssl-transfer detectron2-configs/{frozen,finetune}",
                                      "detectron2 Faster R-CNN R50-FPN, VOC07+12 trainval -> VOC07 test, 144k "
                                      "iterations, batch 2, lr 0.0025 (x0.1 at 96k, 128k), short side 480-800; "
                                      "frozen: FREEZE_AT 4 (stem to res4 fixed), finetune: FREEZE_AT 0"),
    "ssl-transfer-quoted": Variant("Ericsson et al. CVPR 2021, Table 1 (ImageNet column)",
                                   "ImageNet linear top-1 as each method's own paper reports it",
                                   separate="each number was measured with its own method's linear protocol (the "
                                            "paper quotes them), so they are not ranked beside the `imagenet_linear` "
                                            "rows"),
    "hexa-zoo": Variant("this repository", "a protocol no published code runs (adversarial PGD of the probe, "
                        "robustness sets with the linear head, in-domain few-shot)"),
    "hexa-paper": Variant("HEXA paper (arXiv 2012.13493) as indexed by a results aggregator",
                          "the aggregator does not say which protocol or variant measured these",
                          separate="the protocol behind these numbers is not stated, so they cannot be "
                                   "claimed comparable with any other table's rows",
                          fold="ImageNet-1k and PASCAL VOC2007 (one column per benchmark)"),
}

# (protocol, preset) of our records -> the variant it reproduces. Presets not listed here (fast probes,
# our earlier choices, CPU-sized runs) measure something no published row does: tables of their own.
OUR_PRESETS: dict[tuple[str, str], str] = {
    ("linear", "paper"): "moco-lincls",
    ("knn", "paper"): "dino-knn",
    ("lowshot-svm", "paper"): "vissl",
    ("semisup", "paper"): "swav-semisup",
    ("detection", "paper"): "moco-detectron2",
    ("detection", "paper_coco"): "moco-detectron2",
    ("manyshot", "paper"): "ssl-transfer-linear",
    ("finetune", "paper"): "ssl-transfer-finetune",
    ("fewshot", "cdfsl"): "ssl-transfer-fewshot",
    ("fewshot", "paper"): "hexa-zoo",
    ("adversarial", "paper"): "hexa-zoo",
    ("robustness", "paper"): "hexa-zoo",
}

# The shared reference list has no protocol column: (its `source`, a benchmark pattern) -> variant, first
# match wins. A row that matches none stops the refresh, so a new source gets its variant named here.
REFERENCE_PROTOCOLS: tuple[tuple[str, str, str], ...] = (
    ("facebookresearch/moco README", r".*_linear", "moco-lincls"),
    ("facebookresearch/moco detection/README", r".*_det_.*", "moco-detectron2"),
    ("facebookresearch/swav README", r".*_linear", "swav-eval_linear"),
    ("google-research/simclr README", r".*", "simclr"),
    ("SwAV paper (Caron et al. 2020) Table 2", r".*_semisup_.*", "swav-semisup"),
    ("EsViT paper (Li et al. 2021)", r"coco_det_.*", "esvit"),
    ("salesforce/PCL README", r"voc07_.*svm.*", "pcl"),
    ("HEXA paper as indexed by a results aggregator", r".*", "hexa-paper"),
)


def our_variant(protocol: str, preset: str | None) -> str | None:
    """The published variant our (protocol, preset) reproduces; None for a preset of our own."""
    return OUR_PRESETS.get((protocol, preset or "paper"))


def reference_protocol(source: str, benchmark: str) -> str | None:
    """The variant of a shared reference row, by its source and benchmark (None: not named yet)."""
    for src, pattern, variant in REFERENCE_PROTOCOLS:
        if src == source and re.fullmatch(pattern, benchmark):
            return variant
    return None
