"""CI's floors run installs ci/constraints-floors.txt: it must pin each dependency at the floor pyproject declares,
or the run tests versions nobody promised (packaging comes with matplotlib, a dependency)."""

from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli there
    import tomli as tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent


def _floors_declared() -> dict[str, Version]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    floors = {}
    for line in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(line)
        lower = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{line}: one '>=' floor expected"
        floors[canonicalize_name(req.name)] = lower[0]
    return floors


def _floors_pinned() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "ci" / "constraints-floors.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_the_floors_constraints_pin_every_dependency_at_its_declared_floor():
    assert _floors_pinned() == _floors_declared()
