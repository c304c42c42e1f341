"""timm at both ends of pyproject's range: the private function hexa-zoo needs is reached in one place, and
it works with the installed timm (CI runs this file at the newest timm and at the floor)."""

import ast
import json
from pathlib import Path

import timm

from hexa_zoo.timm_compat import write_hf_config

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("hexa_zoo", "pretrain", "transfer", "leaderboards", "orchestration", "bench")


def _private_timm_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "timm":
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names if a.name.split(".")[0] == "timm"]
        else:
            continue
        found += [m for m in modules if any(part.startswith("_") for part in m.split(".")[1:])]
    return found


def test_private_timm_functions_are_reached_only_through_timm_compat():
    offenders = {str(p.relative_to(REPO)): _private_timm_imports(p)
                 for package in PACKAGES for p in (REPO / package).rglob("*.py")
                 if p.name != "timm_compat.py"}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert _private_timm_imports(REPO / "hexa_zoo" / "timm_compat.py") == ["timm.models._hub",
                                                                            "timm.models._hub.save_config_for_hf"]


def test_hf_config_is_written_from_a_str_or_a_path_by_the_installed_timm(tmp_path):
    # timm 1.0.9 to 1.0.29 call `config_path.open()`: the str that publish() once passed crashed there.
    net = timm.create_model("resnet18", num_classes=0, pretrained_cfg={"tag": "t", "license": "mit"})
    for path in (str(tmp_path / "a.json"), tmp_path / "b.json"):
        write_hf_config(net, path, {"hexa_zoo": {"model": "x"}})
        config = json.loads(Path(path).read_text())
        assert config["architecture"] == "resnet18"
        assert config["num_classes"] == 0 and config["num_features"] == 512
        assert config["pretrained_cfg"]["license"] == "mit"
        assert config["hexa_zoo"] == {"model": "x"}
