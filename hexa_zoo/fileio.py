"""Atomic file writing and hashing: a crash never leaves a half-written file or folder."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`.

    Write the file (or folder) at the yielded path. If the block raises, the temporary
    is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # callers create a file or a directory themselves
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_dir() and path.is_dir():
            # Directories cannot be renamed over a non-empty one: swap via a backup name.
            backup = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, backup)
            os.replace(tmp_path, path)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            if tmp_path.is_file():
                with open(tmp_path, "rb") as f:
                    os.fsync(f.fileno())
            os.replace(tmp_path, path)
    finally:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def atomic_save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """`safetensors.torch.save_file`, atomic and byte-reproducible.

    safetensors writes `__metadata__` in a random order in every call (safetensors issue #584), so the
    same head or cache saved twice hashed differently. The header is rewritten in place with its keys
    sorted: the same JSON, padded to the same length, so the tensor offsets stay valid.
    """
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "r+b") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
            canonical = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
            if len(canonical) > length:  # serde_json and Python escape alike, so this would be a safetensors change
                raise RuntimeError(f"safetensors header of {path} grew from {length} to {len(canonical)} bytes "
                                   "when its keys were sorted")
            f.seek(8)
            f.write(canonical.ljust(length, b" "))
    return Path(path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
