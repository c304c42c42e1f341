"""compile=true, a recipe switch (off by default until a GPU measures it): torch.compile of the trunks in place.

On the CPU the test uses the aot_eager backend (the same tracing and autograd graph as inductor, without the
C++ compile that takes a minute per ResNet here); its losses equal eager's to float32 rounding."""

import csv

import pytest
import torch

from hexa_zoo.errors import HexaError
from pretrain.loop import trainer
from pretrain.loop.checkpoint import list_checkpoints
from test_pretrain_trainer import make_images, tiny_cfg


def losses(out) -> list[float]:
    with open(out / "log.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_compiled_trunks_give_the_same_losses_and_checkpoints(tmp_path, monkeypatch, caplog):
    data = make_images(tmp_path / "imgs", 24)
    traced = []

    def compile_and_watch(method, mode, backend):
        for trunk in method.trunks():  # True when the forward runs under the compiler's tracing
            trunk.register_forward_pre_hook(lambda *_: traced.append(torch.compiler.is_compiling()))
        return compile_trunks(method, mode, backend)

    compile_trunks = trainer.compile_trunks
    trainer.train(tiny_cfg(data, tmp_path / "eager", epochs=1))
    assert traced == []
    monkeypatch.setattr(trainer, "compile_trunks", compile_and_watch)
    with caplog.at_level("INFO", logger="pretrain"):
        trainer.train(tiny_cfg(data, tmp_path / "compiled", epochs=1, compile=True, compile_backend="aot_eager"))
    assert "torch.compile of 2 trunk(s): backend aot_eager" in caplog.text  # MoCo: the query and key trunks
    assert True in traced
    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert len(eager) == len(compiled) == 3
    # Same weights, same views: only the graph's float32 rounding may differ (relative 1e-4).
    assert compiled == pytest.approx(eager, rel=1e-4)
    a, b = (torch.load(list_checkpoints(tmp_path / run)[-1], weights_only=True)["model"] for run in ("eager", "compiled"))
    assert a.keys() == b.keys()  # compiled in place: no `_orig_mod.` in the parameter names
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-5) for k in a)


def test_compile_settings_are_checked(tmp_path):
    data = make_images(tmp_path / "imgs", 8)
    with pytest.raises(HexaError, match="compile_mode"):
        trainer.train(tiny_cfg(data, tmp_path / "mode", compile=True, compile_mode="fastest"))
    with pytest.raises(HexaError, match="backend"):
        trainer.train(tiny_cfg(data, tmp_path / "backend", compile=True, compile_backend="nvcc"))
