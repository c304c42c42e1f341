"""Auxiliary BatchNorm for hard views (AdvProp: Xie et al., "Adversarial Examples Improve Image
Recognition", CVPR 2020): hard views are normalised by BN layers of their own, so their batch
statistics and affine parameters never mix with the clean views'.

`AuxBatchNorm(network)` holds one twin (same class, same initial values) of every BatchNorm layer of
`network`. Inside `with aux.active():` each BN layer of the network temporarily holds its twin's
parameters and running buffers (the tensors are swapped, not copied), so the network's own forward,
whatever BN class it uses (timm's BatchNormAct2d, SyncBatchNorm after conversion), normalises with the
twin's statistics and its gradient flows into the twin's parameters. Autograd keeps references to the
tensors it used, so a backward after the block still reaches the right parameters.

What gets published is the trunk with its main BN layers; the twins live beside it in the training
checkpoint (`...aux_bn.twins.<i>.*`) and are only for training.

DDP: the twins are registered where DDP sees them (the method puts this module inside the wrapped
network), so their gradients are averaged like any other. A backward through the hard views alone
leaves the main BN parameters without a gradient, which DDP (find_unused_parameters=False) reports as
an error on the next step; `idle_main_term()` is a zero that depends on them, added to the hard views'
loss, so every parameter takes part in every backward.
"""

from __future__ import annotations

import contextlib
import copy
from functools import partial
from typing import Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

_SWAPPED = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _batch_norms(network: nn.Module) -> list[_BatchNorm]:
    return [m for m in network.modules() if isinstance(m, _BatchNorm)]


class AuxBatchNorm(nn.Module):
    """A twin of every BatchNorm layer of `network` (layers found in `network.modules()` order).

    `network` is the set of layers whose BN gets twins (e.g. `nn.ModuleList([trunk, head])`); it must not
    contain this module, which the method registers wherever its DDP wrapper will see it.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        # Not a child (the network owns its BN layers): a lookup, run on every use, since SyncBatchNorm
        # conversion replaces the network's BN modules after we were built.
        self._find_main_layers = partial(_batch_norms, network)
        self._swapped = False
        self.twins = nn.ModuleList(copy.deepcopy(bn) for bn in _batch_norms(network))

    def _main_layers(self) -> list[_BatchNorm]:
        layers = self._find_main_layers()
        if len(layers) != len(self.twins):
            raise RuntimeError(f"the network has {len(layers)} BatchNorm layers but {len(self.twins)} auxiliary "
                               "twins were built: build AuxBatchNorm after the network's final layout")
        return layers

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Forwards inside normalise with the twins (their statistics are the ones updated)."""
        pairs = list(zip(self._main_layers(), self.twins))
        for main, twin in pairs:
            _swap(main, twin)
        self._swapped = True
        try:
            yield
        finally:
            for main, twin in pairs:
                _swap(main, twin)
            self._swapped = False

    def idle_main_term(self) -> Tensor:
        """0 * (sum of the main BN layers' affine parameters): keeps them in a hard-views-only backward."""
        layers = self.twins if self._swapped else self._main_layers()  # where the main tensors are now
        params = [p for bn in layers for p in (bn.weight, bn.bias) if p is not None and p.requires_grad]
        if not params:
            return torch.zeros(())
        return 0.0 * torch.stack([p.sum() for p in params]).sum()


def _swap(a: nn.Module, b: nn.Module) -> None:
    for name in _SWAPPED:
        for store in ("_parameters", "_buffers"):
            table_a, table_b = getattr(a, store), getattr(b, store)
            if name in table_a or name in table_b:
                table_a[name], table_b[name] = table_b.get(name), table_a.get(name)


def hard_view_norm(aux: AuxBatchNorm | None) -> contextlib.AbstractContextManager:
    """The context a method runs its hard views in: the twins when there are any, else the main BN."""
    return aux.active() if aux is not None else contextlib.nullcontext()


def idle_main_term(aux: AuxBatchNorm | None) -> Tensor | float:
    """What a hard view adds to its loss so DDP sees every parameter used (0 without twins)."""
    return aux.idle_main_term() if aux is not None else 0.0
