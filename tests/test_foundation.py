"""The shared ground: config overrides, atomic files, result records, the CLI entry."""

import json
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from hexa_zoo import records
from hexa_zoo.config import load_config, save_config
from hexa_zoo.errors import ConfigError
from hexa_zoo.fileio import atomic_path, atomic_save_safetensors, atomic_write_json, sha256_file


@dataclass(frozen=True)
class _Inner:
    queue: int = 4
    ks: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class _Recipe:
    lr: float = 0.1
    flag: bool = False
    inner: _Inner = field(default_factory=_Inner)
    maybe: int | None = None


def test_config_yaml_then_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("lr: 0.2\ninner:\n  queue: 16\n")
    cfg = load_config(_Recipe, path, ["inner.ks=[1,2,4]", "flag=true", "maybe=3"])
    assert cfg == _Recipe(lr=0.2, flag=True, inner=_Inner(queue=16, ks=(1, 2, 4)), maybe=3)
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(_Recipe, tmp_path / "saved.yaml") == cfg


@pytest.mark.parametrize("override, words", [("bogus=1", "valid keys are"), ("lr=fast", "expected float"),
                                              ("lr", "key=value")])
def test_config_bad_override_names_the_problem(override, words):
    with pytest.raises(ConfigError) as err:
        load_config(_Recipe, None, [override])
    assert words in str(err.value)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "ckpt.json"
    atomic_write_json(target, {"step": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.json"]


def test_safetensors_with_metadata_are_byte_reproducible(tmp_path):
    """safetensors alone orders `__metadata__` at random per save (its issue #584); ours hash the same every time."""
    import torch
    from safetensors import safe_open

    tensors = {"weight": torch.arange(6.0).reshape(2, 3), "bias": torch.ones(2, dtype=torch.float16)}
    metadata = {key: f"{key} é \"quoted\"\n" for key in "hgfedcba"}
    digests = {sha256_file(atomic_save_safetensors(tensors, tmp_path / f"head{i}.safetensors", metadata))
               for i in range(5)}
    assert len(digests) == 1
    with safe_open(str(tmp_path / "head0.safetensors"), framework="pt") as f:
        assert f.metadata() == metadata
        assert all(torch.equal(f.get_tensor(name), t) for name, t in tensors.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"head{i}.safetensors" for i in range(5)]


def test_records_roundtrip_and_skip_corrupt(tmp_path):
    m = records.metric([70.0, 72.0])
    assert m["mean"] == 71.0 and m["n"] == 2 and abs(m["std"] - 2 ** 0.5) < 1e-12
    rec = records.make_record(protocol="knn", benchmark="embedded_knn", dataset={"name": "embedded"},
                              model={"name": "m"}, metrics={"top1": m}, config={}, seed=0)
    path = records.write_record(tmp_path, rec)
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "foreign.json").write_text(json.dumps({"hello": 1}))
    got, skipped = records.read_records([tmp_path])
    assert [r["_path"] for r in got] == [str(path)]
    assert sorted(s.path.name for s in skipped) == ["broken.json", "foreign.json"]


def test_cli_help_and_unknown_command():
    out = subprocess.run([sys.executable, "-m", "hexa_zoo", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "pretrain" in out.stdout and "transfer" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "hexa_zoo", "frobnicate"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command 'frobnicate'" in bad.stderr
