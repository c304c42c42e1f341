"""Where the embedded dataset lives and how it gets there: `embedded_root()` builds it once under
`$HEXA_DATA_HOME` (in a temporary folder renamed into place, one builder at a time), rebuilds a copy
made by other code, and `resolve_data` turns a `--data` argument into a folder."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import DataError
from .manifest import generate, generator_id, read_manifest
from .spec import DEFAULT_SPEC, FORMAT_VERSION

log = logging.getLogger(__name__)

FOLDER_NAME = f"embedded-v{FORMAT_VERSION}"


def data_home() -> Path:
    """`$HEXA_DATA_HOME`, default `~/.cache/hexa_zoo/data`; read at call time."""
    return Path(os.environ.get("HEXA_DATA_HOME") or Path.home() / ".cache" / "hexa_zoo" / "data").expanduser()


def _is_current(root: Path) -> bool:
    manifest = read_manifest(root)
    return (manifest is not None and manifest.get("version") == FORMAT_VERSION
            and manifest.get("spec") == dataclasses.asdict(DEFAULT_SPEC)
            and manifest.get("generator") == generator_id())


@contextlib.contextmanager
def _build_lock(home: Path) -> Iterator[None]:
    """Serialise generation between processes where flock exists, so a race does the work once.
    Correctness does not depend on it: the rename below is atomic either way."""
    try:
        import fcntl
    except ImportError:  # Windows: two racers may both build; the loser's copy is discarded
        yield
        return
    with open(home / f".{FOLDER_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def embedded_root() -> Path:
    """The root of the embedded dataset, generating it on first use (a few seconds, once).

    Built in a temporary folder beside the target and renamed into place, so readers only ever see a
    complete copy; concurrent callers wait for one builder (flock) or, without flock, keep the copy
    that was renamed first. A copy left by an older version of this module is replaced.
    """
    root = data_home() / FOLDER_NAME
    if _is_current(root):
        return root
    home = root.parent
    home.mkdir(parents=True, exist_ok=True)
    with _build_lock(home):
        if _is_current(root):  # another process built it while we waited
            return root
        if root.exists() and read_manifest(root) is None:
            raise DataError(f"{root} exists but is not a copy of the embedded dataset (no readable manifest.json).",
                            fix="Delete that folder (it is regenerated on next use), or set HEXA_DATA_HOME elsewhere.")
        log.warning("Generating the embedded dataset into %s (once, a few seconds)...", root)
        tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER_NAME}.", suffix=".tmp", dir=home))
        stale = home / f".{FOLDER_NAME}.stale-{os.getpid()}"
        try:
            generate(tmp, DEFAULT_SPEC)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the data is not
            if root.exists():  # an outdated copy: move it aside, then swap the new one in
                os.rename(root, stale)
            try:
                os.rename(tmp, root)
            except OSError:
                if not _is_current(root):  # a racer without flock won: use its copy, else fail
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(stale, ignore_errors=True)
    return root


def resolve_data(spec: str | os.PathLike) -> Path:
    """`"embedded"` -> `embedded_root()`; anything else must be an existing path."""
    if str(spec) == "embedded":
        return embedded_root()
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"Data path {path} does not exist.",
                        fix="Give an existing folder (an ImageFolder tree, a flat folder of images, a VOCdevkit "
                            "or COCO folder), or use --data embedded for the built-in dataset.")
    return path.resolve()
