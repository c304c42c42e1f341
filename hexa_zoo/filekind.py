"""What a weights file is, judged from its bytes before anything loads it.

Every weights file `hexa` reads (`transfer --model`, `zoo convert`, `zoo publish`, `load_trunk`, a zoo
folder's `model.safetensors`) goes through `hexa_zoo.checkpoint_files.read_checkpoint`, which asks `sniff` first, so
an empty, text, truncated or random file gets one clear answer naming the file and what it is, and the
arbitrary-code refusal is kept for a real pickle that references code (`pickle_globals`: the opcodes are
read with `pickletools`, nothing is executed).
"""

from __future__ import annotations

import json
import pickletools
import struct
from pathlib import Path

_HEAD = 4096
_PICKLE_PROTOCOLS = range(2, 6)
# A legacy `torch.save` file is several pickles in a row (magic number, protocol, system info, the object).
_LEGACY_PICKLES = 4


def sniff(path: Path) -> tuple[str, str]:
    """(kind, description): kind is "safetensors", "zip" (torch.save), "pickle", "empty", "text" or "unknown"."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(_HEAD)
    if size == 0:
        return "empty", "an empty file (0 bytes)"
    if head[:4] == b"PK\x03\x04":
        return "zip", f"a zip archive ({size} bytes; torch.save's format)"
    if len(head) >= 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS:
        return "pickle", f"a pickle ({size} bytes, protocol {head[1]})"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors", f"a safetensors file ({size} bytes)"
    if b"\x00" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as err:  # a multi-byte character cut at the end of the head is still text
            text = head[:err.start].decode("utf-8") if err.start > len(head) - 4 else None
        if text is not None and text.strip():
            first = text.strip().splitlines()[0][:60]
            return "text", f"a text file ({size} bytes, starting {first!r})"
    return "unknown", f"neither a PyTorch checkpoint nor a safetensors file ({size} bytes starting {head[:8].hex()})"


def safetensors_problem(path: Path) -> str | None:
    """Why the safetensors file at `path` cannot be whole (truncated, bad header), or None when it can."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            return f"it is {size} bytes, shorter than a safetensors header"
        (n,) = struct.unpack("<Q", prefix)
        if n > size - 8:
            return f"its header says {n} bytes but the file holds {size - 8} after it: truncated"
        try:
            header = json.loads(f.read(n))
        except ValueError as err:
            return f"its header is not JSON ({err})"
    ends = [entry["data_offsets"][1] for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry]
    needed = 8 + n + max(ends, default=0)
    if size < needed:
        return f"it holds {size} bytes where its header needs {needed}: truncated"
    return None


def pickle_globals(path: Path) -> list[str] | None:
    """The `module.name` globals the pickle(s) in `path` would import, or None when it is not a whole pickle."""
    found: list[str] = []
    with open(path, "rb") as f:
        for i in range(_LEGACY_PICKLES):
            here = f.tell()
            if i and not f.read(1):
                break
            f.seek(here)
            strings: list[str] = []
            try:
                for op, arg, _ in pickletools.genops(f):
                    if isinstance(arg, str):
                        strings.append(arg)
                    if op.name == "GLOBAL":
                        found.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
            except Exception:  # noqa: BLE001 - truncated or not a pickle at all: genops only reads opcodes
                if i == 0:
                    return None
                break  # the raw tensor bytes after a legacy file's pickles
    return found
