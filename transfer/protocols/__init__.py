"""The transfer protocols, one module (or small package) each: its config, its presets and `run()`; none imports
another. PROTOCOLS below is the one table of them: `hexa transfer` (transfer/cli.py) builds its sub-commands from
it and transfer/suite.py runs from it, so a protocol's facts are written here once and nowhere else.

A protocol with helpers of its own keeps them beside it: lowshot_svm/ (the SVM solver, the low-shot samples,
the scikit-learn reference), manyshot/ (the C sweep), detection/ (recipe, batches, model, training, evaluation,
the detectron2 backend).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from ..readers import cdfsl, imagenet_subsets, images, voc
from ..readers import detection as detection_reader
from ..readers import manyshot as manyshot_reader
from . import adversarial, detection, fewshot, finetune, knn, linear, lowshot_svm, manyshot, robustness, semisup


@dataclass(frozen=True)
class Protocol:
    """One row of the table: what `hexa transfer NAME` runs and what its command line offers."""

    module: ModuleType                 # run(model, data, out, *, preset, overrides, seed) -> record; PRESETS
    readers: tuple[ModuleType, ...]    # the transfer/readers modules that read its data
    summary: str                       # one line for --help
    resumes: bool = False              # checkpoints as it trains: `--resume auto` is `--set resume=auto`
    head: str = ""                     # takes a linear head (`--head X` is `--set head=X`): what it does without one
    datasets: tuple[str, ...] = ()     # the datasets `--dataset NAME` (`--set dataset=NAME`) chooses among

    @property
    def presets(self) -> tuple[str, ...]:
        """Its preset names, sorted (the presets themselves are the module's PRESETS)."""
        return tuple(sorted(self.module.PRESETS))


# CLI name -> protocol, in the order `hexa transfer --help` lists them.
PROTOCOLS: dict[str, Protocol] = {
    "linear": Protocol(linear, (images,), resumes=True,
                       summary="linear classifier on the frozen trunk (MoCo main_lincls; fast L-BFGS variant)"),
    "knn": Protocol(knn, (images,), summary="weighted cosine kNN on frozen features (k = 20, 200; T = 0.07)"),
    "lowshot-svm": Protocol(lowshot_svm, (voc,),
                            summary="VOC07 low-shot linear SVMs (k = 1..96, 5 samples) and the full-data SVM"),
    "semisup": Protocol(semisup, (imagenet_subsets,), resumes=True,
                        summary="fine-tune all layers on 1 or 10 percent of the labels (swav eval_semisup)"),
    "fewshot": Protocol(fewshot, (images, cdfsl),
                        summary="5-way 1-/5-shot episodes on held-out classes (logistic regression, nearest centroid)"),
    "detection": Protocol(detection, (detection_reader,), resumes=True,
                          summary="Faster R-CNN on VOC07+12 or COCO with the trunk as backbone"),
    "manyshot": Protocol(manyshot, (manyshot_reader,), datasets=tuple(manyshot_reader.LAYOUTS),
                         summary="many-shot linear transfer to 11 datasets (ssl-transfer linear.py: L-BFGS, 45-value "
                                 "C sweep)"),
    "adversarial": Protocol(adversarial, (images,),
                            head="without it a fast linear head is trained first on --data's train split",
                            summary="accuracy of trunk + linear head under L-inf PGD (eps 1, 2, 4 / 255; 10 steps)"),
    "robustness": Protocol(robustness, (images,), datasets=robustness.DATASETS,
                           head="required for the ImageNet sets; on embedded-c without it a fast linear head is "
                                "trained first on the train split",
                           summary="trunk + ImageNet linear head on ImageNet-V2/R/A/Sketch/C (mCE against AlexNet's "
                                   "errors)"),
    "finetune": Protocol(finetune, (manyshot_reader,), resumes=True, datasets=tuple(manyshot_reader.LAYOUTS),
                         summary="fine-tune trunk + head on a many-shot dataset (ssl-transfer finetune.py: Nesterov "
                                 "SGD, cosine, lr x wd grid)"),
}
