"""The release layouts' own model code, re-created module for module (names, nesting, padding) from the
official repositories, to build test checkpoints exactly as each release's code writes them.

Each builder returns `(file_object, features)`: what the official code passes to `torch.save`, and a
function giving the official trunk's features (eval mode) for an input batch. Weights and BatchNorm
statistics are random (BN is no identity). Where the original is TF or JAX, the PyTorch conversion's
model is re-created (named at each builder).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

LAYERS_R50 = (3, 4, 6, 3)


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BN statistics everywhere, so no tensor can be mistaken for another; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                if module.affine:
                    module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
                module.num_batches_tracked.fill_(1000)
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
    return model.eval()


def perturbed(model: nn.Module) -> nn.Module:
    """A momentum/EMA copy that has drifted from the online network, as after training."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for tensor in twin.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.05)
    return twin


class DDP(nn.Module):
    """What DistributedDataParallel adds to state-dict keys: the `module.` wrapper."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


def sgd_state(model: nn.Module, lr: float = 0.03) -> dict:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4).state_dict()


def torchvision_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    fc, model.fc = model.fc, nn.Identity()
    try:
        with torch.no_grad():
            return model(x)
    finally:
        model.fc = fc


# ------------------------------------------------------------------- torchvision-style ResNet-50s

def conv3x3(cin, cout, stride=1, padding=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=padding, bias=False)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def pad_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """byol-convert's `pad_same`: TF 'SAME' padding (extra pixel at the bottom/right when uneven)."""
    pads = []
    for size in x.shape[:1:-1]:  # W, then H, as F.pad wants
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (stride on the 3x3), with the variants the releases' own copies have:
    `downsample_first` (simclr-converter registers downsample before conv1), `last_activation`
    (VICReg), `tf_same` (byol-convert: convs unpadded, `pad_same` before each)."""

    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None, *, downsample_first=False, tf_same=False,
                 last_activation=True):
        super().__init__()
        if downsample_first:
            self.downsample = downsample
        self.conv1 = conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, padding=0 if tf_same else 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        if not downsample_first:
            self.downsample = downsample
        self.stride, self.tf_same = stride, tf_same
        self.last_activation = nn.ReLU(inplace=True) if last_activation else nn.Identity()

    def forward(self, x):
        pad = (lambda t, k, s: pad_same(t, k, s)) if self.tf_same else (lambda t, k, s: t)
        out = self.relu(self.bn1(self.conv1(pad(x, 1, 1))))
        out = self.relu(self.bn2(self.conv2(pad(out, 3, self.stride))))
        out = self.bn3(self.conv3(pad(out, 1, 1)))
        identity = x if self.downsample is None else self.downsample(pad(x, 1, self.stride))
        return self.last_activation(out + identity)


class ResNet50(nn.Module):
    """torchvision's ResNet-50 layout as PyContrast (no fc), simclr-converter (fc, downsample first),
    byol-convert (fc, TF 'SAME' padding) and VICReg (a ConstantPad2d before a padding-2 stem, no fc) write it."""

    def __init__(self, *, fc: int | None = None, block_kw: dict | None = None, vicreg_stem=False, tf_same=False):
        super().__init__()
        block_kw = dict(block_kw or {}, tf_same=tf_same)
        if vicreg_stem:
            self.padding = nn.ConstantPad2d(1, 0.0)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=0 if tf_same else (2 if vicreg_stem else 3), bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=0 if tf_same else 1)
        self.inplanes, self.tf_same, self.vicreg_stem = 64, tf_same, vicreg_stem
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), LAYERS_R50)):
            setattr(self, f"layer{i + 1}", self._make_layer(planes, blocks, 1 if i == 0 else 2, block_kw))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        if fc:
            self.fc = nn.Linear(2048, fc)

    def _make_layer(self, planes, blocks, stride, block_kw):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * 4, stride), nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, **block_kw)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes, **block_kw) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features(self, x):
        if self.vicreg_stem:
            x = self.padding(x)
        x = self.relu(self.bn1(self.conv1(pad_same(x, 7, 2) if self.tf_same else x)))
        x = self.maxpool(pad_same(x, 3, 2) if self.tf_same else x)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return torch.flatten(self.avgpool(x), 1)


def tv_resnet50(seed: int, **kwargs) -> nn.Module:
    return randomize(torchvision.models.resnet50(**kwargs), seed)


def tv_trunk_features(model):
    return lambda x: torchvision_features(model, x)


# ---------------------------------------------------------------------------------------- layouts

def pycontrast(method: str, seed: int = 11):
    """HobbitLong/PyContrast networks/build_backbone.py (RGBSingleHead / RGBMultiHeads), networks/util.py
    (JigsawHead), memory/mem_bank.py + mem_moco.py, learning/contrast_trainer.py `save`. Presets from
    options/base_options.py: InsDis (bank, linear head), PIRL (bank, jigsaw, linear), InfoMin (moco, jigsaw, mlp)."""
    jigsaw, mem, head = {"InsDis": (False, "bank", "linear"), "PIRL": (True, "bank", "linear"),
                         "InfoMin": (True, "moco", "mlp")}[method]

    def build():
        model = nn.Module()
        model.encoder = ResNet50()
        mlp = [nn.Linear(2048, 2048), nn.ReLU(inplace=True)] if head == "mlp" else []
        model.head = nn.Sequential(*mlp, nn.Linear(2048, 128), nn.Identity())  # Identity: Normalize (no params)
        if jigsaw:
            model.head_jig = nn.Module()
            model.head_jig.fc1 = (nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(inplace=True), nn.Linear(2048, 128))
                                  if head == "mlp" else nn.Linear(2048, 128))
            model.head_jig.fc2 = nn.Linear(128 * 9, 128)
        return model

    model = randomize(build(), seed)
    memory = {"memory": F.normalize(torch.randn(4096 if mem == "moco" else 1000, 128))}  # queue K / bank n_data
    state = {"model": DDP(model).state_dict(), "contrast": memory, "optimizer": sgd_state(model), "epoch": 200}
    if mem == "moco":
        state["model_ema"] = perturbed(model).state_dict()  # not DDP-wrapped in ContrastTrainer
    return state, lambda x: _no_grad(model.encoder.features, x)


def simclr_v1(seed: int = 12):
    """tonylins/simclr-converter resnet_wider.py resnet50x1 (downsample registered first, fc 1000) and
    convert.py's `torch.save({'state_dict': model.state_dict()})`."""
    model = randomize(ResNet50(fc=1000, block_kw={"downsample_first": True}), seed)
    return {"state_dict": model.state_dict()}, lambda x: _no_grad(model.features, x)


def byol(seed: int = 13):
    """ajtejankar/byol-convert resnet.py (TF 'SAME' padding, fc 1000) and convert.py: a bare state dict of
    the JAX parameters and BN moving averages under torchvision names, no num_batches_tracked."""
    model = randomize(ResNet50(fc=1000, tf_same=True), seed)
    state = {k: v for k, v in model.state_dict().items() if "tracked" not in k}
    return state, lambda x: _no_grad(model.features, x)


def vicreg(seed: int = 14):
    """facebookresearch/vicreg resnet.py resnet50 (padding layer, last_activation) and main_vicreg.py's
    `torch.save(model.module.backbone.state_dict(), 'resnet50.pth')`."""
    model = randomize(ResNet50(vicreg_stem=True), seed)
    return model.state_dict(), lambda x: _no_grad(model.features, x)


class _BNRelu(nn.Sequential):
    def __init__(self, channels, relu=True):
        super().__init__(nn.BatchNorm2d(channels, eps=1e-5), nn.ReLU() if relu else nn.Identity())


class _SimCLRv2Block(nn.Module):
    def __init__(self, cin, cout, stride, projection):
        super().__init__()
        self.projection = nn.Module() if projection else nn.Identity()
        if projection:
            self.projection.shortcut = nn.Conv2d(cin, cout * 4, 1, stride=stride, bias=False)
            self.projection.bn = _BNRelu(cout * 4, relu=False)
        self.net = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), _BNRelu(cout),
                                 nn.Conv2d(cout, cout, 3, stride=stride, padding=1, bias=False), _BNRelu(cout),
                                 nn.Conv2d(cout, cout * 4, 1, bias=False), _BNRelu(cout * 4, relu=False))

    def forward(self, x):
        shortcut = x if isinstance(self.projection, nn.Identity) else \
            self.projection.bn(self.projection.shortcut(x))
        return F.relu(shortcut + self.net(x))


class _SimCLRv2Blocks(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def simclr_v2(seed: int = 15):
    """Separius/SimCLRv2-Pytorch resnet.py get_resnet(50, 1, sk_ratio=0): ResNet.net = Sequential(Stem,
    Blocks x4), Blocks.blocks = ModuleList, ContrastiveHead.layers; convert.py saves {'resnet', 'head'}."""
    stem = nn.Sequential(nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), _BNRelu(64),
                         nn.MaxPool2d(3, stride=2, padding=1))
    stages, cin = [stem], 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), LAYERS_R50)):
        stages.append(_SimCLRv2Blocks([_SimCLRv2Block(cin, planes, 1 if i == 0 else 2, True)] +
                                      [_SimCLRv2Block(planes * 4, planes, 1, False) for _ in range(1, blocks)]))
        cin = planes * 4
    resnet = nn.Module()
    resnet.net, resnet.fc = nn.Sequential(*stages), nn.Linear(2048, 1000)
    head = nn.Module()
    head.layers = nn.ModuleList()
    for i in range(3):
        dim = 2048 if i < 2 else 128
        head.layers.extend([nn.Linear(2048, dim, bias=False), nn.BatchNorm1d(dim)] + ([nn.ReLU()] if i < 2 else []))
    randomize(resnet, seed), randomize(head, seed + 1)
    return ({"resnet": resnet.state_dict(), "head": head.state_dict()},
            lambda x: _no_grad(lambda y: resnet.net(y).mean(dim=[2, 3]), x))




def _mlp(num_layers, input_dim, mlp_dim, output_dim):
    """moco-v3 moco/builder.py `_build_mlp`."""
    layers = []
    for i in range(num_layers):
        dim1, dim2 = (input_dim if i == 0 else mlp_dim), (output_dim if i == num_layers - 1 else mlp_dim)
        layers.append(nn.Linear(dim1, dim2, bias=False))
        layers += [nn.BatchNorm1d(dim2), nn.ReLU(inplace=True)] if i < num_layers - 1 else \
            [nn.BatchNorm1d(dim2, affine=False)]
    return nn.Sequential(*layers)


def moco_v3(seed: int = 16):
    """facebookresearch/moco-v3 moco/builder.py MoCo._init_encoders_with_resnet (torchvision resnet50,
    zero_init_residual, fc -> 2-layer MLP 4096/256, 2-layer predictor) and main_moco.py's checkpoint."""
    model = nn.Module()
    model.base_encoder = tv_resnet50(seed, zero_init_residual=True, num_classes=4096)
    model.base_encoder.fc = randomize(_mlp(2, 2048, 4096, 256), seed + 1)
    model.momentum_encoder = perturbed(model.base_encoder)
    model.predictor = randomize(_mlp(2, 256, 4096, 256), seed + 2)
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
              "_growth_tracker": 0}
    state = {"epoch": 1000, "arch": "resnet50", "state_dict": DDP(model).state_dict(),
             "optimizer": sgd_state(model, 0.6), "scaler": scaler}
    return state, tv_trunk_features(model.base_encoder)


def simsiam(seed: int = 17):
    """facebookresearch/simsiam simsiam/builder.py (encoder.fc = 3-layer projector ending in the original
    fc and an affine-free BN; 2-layer predictor) and main_simsiam.py's checkpoint."""
    model = nn.Module()
    model.encoder = tv_resnet50(seed, num_classes=2048, zero_init_residual=True)
    last = model.encoder.fc
    model.encoder.fc = randomize(nn.Sequential(
        nn.Linear(2048, 2048, bias=False), nn.BatchNorm1d(2048), nn.ReLU(inplace=True),
        nn.Linear(2048, 2048, bias=False), nn.BatchNorm1d(2048), nn.ReLU(inplace=True),
        last, nn.BatchNorm1d(2048, affine=False)), seed + 1)
    model.predictor = randomize(nn.Sequential(nn.Linear(2048, 512, bias=False), nn.BatchNorm1d(512),
                                              nn.ReLU(inplace=True), nn.Linear(512, 2048)), seed + 2)
    state = {"epoch": 100, "arch": "resnet50", "state_dict": DDP(model).state_dict(), "optimizer": sgd_state(model)}
    return state, tv_trunk_features(model.encoder)


def vissl(seed: int = 18, with_ema: bool = True):
    """facebookresearch/vissl models/trunks/resnext.py (torchvision blocks in `_feature_blocks`, a
    ModuleDict), heads/swav_prototypes_head.py, base_ssl_model.get_classy_state and hooks/log_hooks.py's
    checkpoint_content."""
    tv = tv_resnet50(seed)
    trunk = nn.Module()
    trunk._feature_blocks = nn.ModuleDict([
        ("conv1", tv.conv1), ("bn1", tv.bn1), ("conv1_relu", tv.relu), ("maxpool", tv.maxpool),
        ("layer1", tv.layer1), ("layer2", tv.layer2), ("layer3", tv.layer3), ("layer4", tv.layer4),
        ("avgpool", tv.avgpool), ("flatten", nn.Flatten(1))])
    head = nn.Module()
    head.projection_head = nn.Sequential(nn.Linear(2048, 2048), nn.BatchNorm1d(2048), nn.ReLU(inplace=True),
                                         nn.Linear(2048, 128))
    head.prototypes0 = nn.Linear(128, 3000, bias=False)
    heads = randomize(nn.ModuleList([head]), seed + 1)
    base_model = {"model": {"trunk": trunk.state_dict(), "heads": heads.state_dict()},
                  "meta": {"trunk": {}, "heads": []}}
    classy = {"train": True, "base_model": base_model, "meters": [], "optimizer": sgd_state(trunk, 4.8),
              "phase_idx": 399, "train_phase_idx": 399, "num_updates": 400 * 1251, "losses": [], "hooks": {}}
    if with_ema:
        classy["ema_model"] = {"model": {"trunk": perturbed(trunk).state_dict(), "heads": heads.state_dict()},
                               "meta": {"trunk": {}, "heads": []}}
    state = {"phase_idx": 399, "iteration": 500400, "loss": {"queue": torch.randn(2, 3840, 128)},
             "iteration_num": 500400, "train_phase_idx": 399, "classy_state_dict": classy}
    return state, tv_trunk_features(tv)


def barlowtwins(seed: int = 19):
    """facebookresearch/barlowtwins main.py: backbone = torchvision resnet50(zero_init_residual=True) with
    fc = Identity; `torch.save(model.module.backbone.state_dict(), 'resnet50.pth')`."""
    backbone = tv_resnet50(seed, zero_init_residual=True)
    backbone.fc = nn.Identity()
    return backbone.state_dict(), lambda x: _no_grad(backbone, x)


def dino(seed: int = 20):
    """facebookresearch/dino: the teacher backbone, a torchvision resnet50 whose fc is Identity
    (hubconf.dino_resnet50 loads dino_resnet50_pretrain.pth into exactly that)."""
    return barlowtwins(seed)


def supervised(seed: int = 21):
    """torchvision.models.resnet50's own weight files: the whole model, classifier included."""
    model = tv_resnet50(seed)
    return model.state_dict(), tv_trunk_features(model)


def _no_grad(fn, x):
    with torch.no_grad():
        return fn(x)
