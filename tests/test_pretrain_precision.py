"""amp_dtype=bfloat16, a switch for the GPU check to measure (default float16 on CUDA, fp32 on the CPU): bf16
autocast needs no loss scale and runs on the CPU too, where its losses track float32's."""

import csv

import pytest

from hexa_zoo.errors import HexaError
from pretrain.loop import trainer
from test_pretrain_trainer import make_images, tiny_cfg


def losses(out) -> list[float]:
    with open(out / "log.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_bf16_autocast_tracks_float32_losses(tmp_path, caplog):
    data = make_images(tmp_path / "imgs", 24)
    trainer.train(tiny_cfg(data, tmp_path / "fp32", epochs=1, amp=False))
    with caplog.at_level("INFO", logger="pretrain"):
        trainer.train(tiny_cfg(data, tmp_path / "bf16", epochs=1, amp=True, amp_dtype="bfloat16"))
    assert "bfloat16 autocast" in caplog.text
    fp32, bf16 = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert len(fp32) == len(bf16) == 3
    # bf16 keeps 8 bits of mantissa: the first step (same weights, same views) within 1%, the next within 3%.
    assert abs(bf16[0] - fp32[0]) <= 0.01 * fp32[0]
    assert all(abs(b - f) <= 0.03 * f for b, f in zip(bf16, fp32))
    assert bf16 != fp32  # it did run in bfloat16


def test_an_unknown_amp_dtype_is_refused(tmp_path):
    data = make_images(tmp_path / "imgs", 8)
    with pytest.raises(HexaError, match="amp_dtype"):
        trainer.train(tiny_cfg(data, tmp_path / "run", amp_dtype="float8"))
