"""Faster / Mask R-CNN around a pre-trained timm ResNet, built from torchvision's detection pieces.

Two layouts:

- `c4` (the MoCo detection protocol, detectron2's R50-C4 with `Res5ROIHeadsExtraNorm`): the stem and
  res2-res4 are the backbone (stride 16); the RPN runs on res4; each proposal is pooled to 14x14 with
  RoIAlign (aligned, detectron2's ROIAlignV2); res5 (stride 2 -> 7x7) followed by an extra BatchNorm is
  the box head, then average pooling and the box predictor. Mask R-CNN, as detectron2's `Res5ROIHeads`:
  in training the mask predictor (a 2x deconvolution) takes the box head's res5 maps of the foreground
  proposals, so res5 runs once per step; at inference the predicted boxes are pooled and run through
  res5 again.
- `fpn`: torchvision's ResNet-FPN (`resnet_fpn_backbone` style) with its default heads.

The trunk's weights come from the timm model: timm's plain ResNets use torchvision's parameter names
(conv1, bn1, layer1-4, downsample.0/1) and its layout (stride in the 3x3 conv, STRIDE_IN_1X1 False), so
the map below is a checked identity. BatchNorm layers stay trainable BatchNorm (FREEZE_AT 0); under
torchrun they become SyncBatchNorm in `detection.py`.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Iterator

import torch
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from hexa_zoo.errors import CheckpointFormatError, ConfigError

TRUNK_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def timm_to_torchvision_resnet(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Trunk weights of a timm ResNet under torchvision ResNet names (the classifier, if any, dropped).

    timm's `resnet*` and torchvision's share every trunk name, so this keeps the trunk keys and checks
    that nothing else (a deep stem, an attention block) hides among them.
    """
    mapped = {k: v for k, v in state_dict.items() if k.startswith(TRUNK_PREFIXES)}
    if not mapped:
        raise CheckpointFormatError("the model has no ResNet trunk weights (conv1, bn1, layer1-4)",
                                    "detection needs a plain ResNet trunk such as timm's resnet18 or resnet50")
    return mapped


def torchvision_resnet_from_timm(timm_model: nn.Module, arch: str) -> torchvision.models.ResNet:
    """A torchvision ResNet of `arch` carrying the timm model's trunk weights (checked key by key)."""
    base = arch.split(".")[0]
    if base not in TORCHVISION_RESNETS:
        raise ConfigError(f"detection supports plain ResNets ({', '.join(TORCHVISION_RESNETS)}), not {arch!r}",
                          "use a model whose trunk is a timm resnet18/34/50/101/152")
    resnet = getattr(torchvision.models, base)(weights=None)
    weights = timm_to_torchvision_resnet(timm_model.state_dict())
    expected = {k: v.shape for k, v in resnet.state_dict().items() if k.startswith(TRUNK_PREFIXES)}
    wrong = sorted(set(expected) ^ set(weights))
    wrong += [k for k in expected if k in weights and weights[k].shape != expected[k]]
    if wrong:
        raise CheckpointFormatError(f"timm model {arch!r} does not map onto torchvision's {base}: "
                                    f"{len(wrong)} mismatched key(s), e.g. {wrong[:5]}",
                                    "use a plain timm ResNet (not a -d/-s variant) for detection")
    resnet.load_state_dict(weights, strict=False)
    resnet.fc = nn.Identity()
    return resnet


class C4Backbone(nn.Sequential):
    """Stem + res2-res4 of a ResNet: one feature map at stride 16 (detectron2's `res4`)."""

    def __init__(self, resnet: torchvision.models.ResNet):
        super().__init__(OrderedDict(conv1=resnet.conv1, bn1=resnet.bn1, relu=resnet.relu, maxpool=resnet.maxpool,
                                     layer1=resnet.layer1, layer2=resnet.layer2, layer3=resnet.layer3))
        self.out_channels = _stage_channels(resnet.layer3)


class Res5ExtraNorm(nn.Module):
    """res5 followed by an extra BatchNorm (MoCo's `Res5ROIHeadsExtraNorm`); returns the feature map."""

    def __init__(self, layer4: nn.Module):
        super().__init__()
        self.res5 = layer4
        self.out_channels = _stage_channels(layer4)
        self.norm = nn.BatchNorm2d(self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.res5(x))


class PooledBoxHead(nn.Module):
    """The C4 box head: res5 (+ extra norm) then the spatial mean, as detectron2's Res5ROIHeads.

    With `keep_maps` (Mask R-CNN) a training forward keeps the res5 maps for `Res5MaskFeatures`.
    """

    def __init__(self, res5: Res5ExtraNorm, keep_maps: bool = False):
        super().__init__()
        self.res5 = res5
        self.out_channels = res5.out_channels
        self.keep_maps = keep_maps
        self.maps: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.res5(x)
        self.maps = maps if self.training and self.keep_maps else None
        return maps.mean(dim=(2, 3))


class RoIAlignC4(MultiScaleRoIAlign):
    """RoIAlign of the single stride-16 map, pixel-aligned (detectron2's ROIAlignV2, sampling ratio 0).

    A MultiScaleRoIAlign only because torchvision's constructors insist on that type; the pooling is ours.
    With `keep_boxes` a training forward keeps the boxes it pooled, for `Res5MaskFeatures`.
    """

    def __init__(self, output_size: int = 14, stride: int = 16, sampling_ratio: int = 0, keep_boxes: bool = False):
        super().__init__(["0"], output_size, sampling_ratio)
        self.output_size, self.scale, self.sampling_ratio = output_size, 1.0 / stride, sampling_ratio
        self.keep_boxes = keep_boxes
        self.boxes: list[torch.Tensor] | None = None

    def forward(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        self.boxes = boxes if self.training and self.keep_boxes else None
        x = next(iter(features.values()))
        return torchvision.ops.roi_align(x, boxes, self.output_size, self.scale, self.sampling_ratio, aligned=True)


class Res5MaskFeatures(MultiScaleRoIAlign):
    """The C4 mask predictor's input, as detectron2's `Res5ROIHeads.forward`.

    Training: the box head's res5 maps of the foreground proposals (detectron2 selects them from
    `box_features`), so res5 runs once per step and its BatchNorm sees each batch once. Inference: the
    predicted boxes pooled again and run through res5 (detectron2's `forward_with_given_boxes`).
    Stands in torchvision's `mask_roi_pool` slot (hence the type); the mask head is then the identity.
    """

    def __init__(self, box_pool: RoIAlignC4, box_head: PooledBoxHead):
        super().__init__(["0"], box_pool.output_size, box_pool.sampling_ratio)
        self._box_branch = (box_pool, box_head)  # a tuple, so the box branch's modules are not registered twice

    def forward(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        pool, head = self._box_branch
        if not self.training:
            return head.res5(pool(features, boxes, image_shapes))
        maps, pooled = head.maps, pool.boxes
        if maps is None or pooled is None:
            raise RuntimeError("the C4 mask head reuses the box head's res5 maps: the box branch must run first, "
                               "in training mode, in the same step")
        head.maps = pool.boxes = None  # the foreground rows are copied out below; the rest is freed (detectron2 too)
        rows, offset = [], 0
        for fg, sampled in zip(boxes, pooled):
            if not len(fg):
                rows.append(torch.zeros(0, dtype=torch.long, device=maps.device))
                offset += len(sampled)
                continue
            # torchvision hands the mask branch `proposals[i][labels[i] > 0]`: rows of the boxes the box branch
            # pooled. Find each one's row; two equal boxes pool equal maps, so the first match is exact.
            match = (fg[:, None, :] == sampled[None, :, :]).all(dim=2)
            if not bool(match.any(dim=1).all()):
                raise RuntimeError("a foreground proposal is not among the boxes the box head pooled")
            rows.append(offset + match.float().argmax(dim=1))  # argmax gives the first of equal maxima
            offset += len(sampled)
        return maps[torch.cat(rows)]


def _stage_channels(stage: nn.Module) -> int:
    last = list(stage.children())[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


def _init_predictor(predictor: FastRCNNPredictor) -> FastRCNNPredictor:
    # detectron2's FastRCNNOutputLayers: class scores N(0, 0.01), box deltas N(0, 0.001), zero biases.
    nn.init.normal_(predictor.cls_score.weight, std=0.01)
    nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
    for layer in (predictor.cls_score, predictor.bbox_pred):
        nn.init.zeros_(layer.bias)
    return predictor


def build_detector(timm_model: nn.Module, arch: str, num_classes: int, *, layout: str = "c4",
                   masks: bool = False, min_size_train: tuple[int, ...] = (800,), max_size: int = 1333,
                   image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225), roi_resolution: int = 14,
                   **sampling: int) -> FasterRCNN:
    """Faster R-CNN (or Mask R-CNN with `masks`) for `num_classes` foreground classes on the timm trunk.

    Training images are resized to a random one of `min_size_train`; evaluate inside
    `eval_resolution(model, size)` for the test size. `sampling` overrides torchvision's proposal and
    RoI counts (`rpn_pre_nms_top_n_train`, `rpn_post_nms_top_n_test`, `box_batch_size_per_image`, ...),
    whose defaults here are detectron2's (C4) or torchvision's (FPN). `roi_resolution` is the C4 RoIAlign
    output (detectron2: 14; res5 halves it).
    """
    resnet = torchvision_resnet_from_timm(timm_model, arch)
    common = dict(min_size=tuple(min_size_train), max_size=max_size, image_mean=list(image_mean),
                  image_std=list(image_std), box_score_thresh=0.05, box_nms_thresh=0.5, box_detections_per_img=100)
    if layout == "fpn":
        from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

        backbone = _resnet_fpn_extractor(resnet, trainable_layers=5, norm_layer=nn.BatchNorm2d)
        cls = MaskRCNN if masks else FasterRCNN
        model = cls(backbone, num_classes=num_classes + 1, **{**common, **sampling})
        _init_predictor(model.roi_heads.box_predictor)
        return model
    if layout != "c4":
        raise ConfigError(f"layout={layout!r}", "use layout=c4 (the MoCo protocol) or layout=fpn")
    backbone = C4Backbone(resnet)
    res5 = Res5ExtraNorm(resnet.layer4)
    box_pool, box_head = RoIAlignC4(roi_resolution, keep_boxes=masks), PooledBoxHead(res5, keep_maps=masks)
    anchors = AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    c4 = dict(
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_train=12000, rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=6000, rpn_post_nms_top_n_test=1000,
        box_roi_pool=box_pool, box_head=box_head,
        box_predictor=_init_predictor(FastRCNNPredictor(res5.out_channels, num_classes + 1)),
        box_batch_size_per_image=512, box_positive_fraction=0.25,
    )
    c4.update(common, **sampling)
    if masks:
        # detectron2 C4: the mask features are the box branch's res5 maps (reused in training, recomputed for
        # the predicted boxes at inference), then a 2x deconvolution to 14x14.
        return MaskRCNN(backbone, num_classes=None, mask_roi_pool=Res5MaskFeatures(box_pool, box_head),
                        mask_head=nn.Identity(),
                        mask_predictor=MaskRCNNPredictor(res5.out_channels, 256, num_classes + 1), **c4)
    return FasterRCNN(backbone, num_classes=None, **c4)


@contextlib.contextmanager
def eval_resolution(model: FasterRCNN, min_size_test: int) -> Iterator[FasterRCNN]:
    """Evaluate at `min_size_test` (torchvision resizes eval images to the last of `transform.min_size`)."""
    saved = model.transform.min_size
    model.transform.min_size = (min_size_test,)
    try:
        yield model
    finally:
        model.transform.min_size = saved


def trunk_parameters(model: FasterRCNN) -> dict[str, torch.Tensor]:
    """The detector's ResNet trunk weights under torchvision ResNet names, for checks and exports."""
    out = {}
    for name, value in model.state_dict().items():
        for prefix, new in (("backbone.body.", ""), ("backbone.", ""), ("roi_heads.box_head.res5.res5.", "layer4.")):
            if name.startswith(prefix):
                rest = name[len(prefix):]
                if new or rest.startswith(TRUNK_PREFIXES):
                    out[new + rest] = value
                break
    return out
