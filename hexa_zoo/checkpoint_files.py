"""Reading checkpoint files safely: a file is loaded without running code, or refused with an error that names it.

Safe by construction: safetensors load as tensors, pickles with ``torch.load(weights_only=True)``, and a
pickle that would import a Python object is refused before anything in it runs. What a file is comes from
its bytes first (`filekind`), so an empty, text, truncated or random file is named as such.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointFormatError, UnsafeCheckpointError, WeightsNotFoundError


def read_checkpoint(path: str | Path) -> Any:
    """Load a checkpoint without running code: safetensors, or a pickle with `weights_only=True`.

    What the file is comes from its bytes first (`filekind.sniff`), so an empty, text, truncated or random
    file is named as such, whatever its suffix; only a pickle that imports code is called unsafe.
    """
    from .filekind import pickle_globals, safetensors_problem, sniff

    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"no checkpoint file at {path}", "check the path (and that the download finished)")
    kind, what = sniff(path)
    if kind not in ("safetensors", "zip", "pickle"):
        raise CheckpointFormatError(f"{path} is {what}, not model weights",
                                    "pass a checkpoint saved by torch.save (.pth, .pth.tar, .pt) or a .safetensors file")
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        problem = safetensors_problem(path)
        try:
            if problem is None:
                return load_file(path)
        except (SafetensorError, OSError, ValueError) as err:
            problem = str(err).splitlines()[0][:200]
        raise CheckpointFormatError(f"{path} is a damaged safetensors file: {problem}", _REFETCH)
    refuse_unsafe_pickle(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # legacy (non-zip) files are judged here, while unpickling
        names = pickle_globals(path) if kind == "pickle" else None
        if names:  # a whole pickle that imports something torch's safe loader does not allow
            shown = [n for n in names if not n.startswith(("torch.", "collections.OrderedDict"))] or names
            raise _unsafe(path, sorted(set(shown))) from None
        detail = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()[0][:120] if str(err) else ""
        raise CheckpointFormatError(f"{path} is {what} that is damaged, truncated or not a checkpoint"
                                    + (f" ({detail})" if detail else ""), _REFETCH) from None
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, EOFError, KeyError... for broken files
        first = (str(err).splitlines() or [type(err).__name__])[0][:160]
        raise CheckpointFormatError(f"{path} is {what} that is damaged or truncated ({type(err).__name__}: {first})",
                                    _REFETCH) from None


def check_safetensors(path: str | Path) -> None:
    """Raise the same clear errors as `read_checkpoint` for a safetensors file that is not whole, without loading it."""
    from .filekind import safetensors_problem, sniff

    path = Path(path)
    kind, what = sniff(path)
    if kind != "safetensors":
        raise CheckpointFormatError(f"{path} is {what}, not a safetensors file", _REFETCH)
    problem = safetensors_problem(path)
    if problem:
        raise CheckpointFormatError(f"{path} is a damaged safetensors file: {problem}", _REFETCH)


_REFETCH = "download or export it again (a copy cut short is the usual cause), or pass another file"


def refuse_unsafe_pickle(path: str | Path) -> None:
    """Raise UnsafeCheckpointError if unpickling `path` would import anything but tensor machinery.

    `torch.serialization.get_unsafe_globals_in_checkpoint` only reads the pickle's opcodes; nothing in
    the file is executed.
    """
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # not a zip checkpoint (legacy format): torch.load(weights_only=True) will judge
        return
    if unsafe:
        raise _unsafe(path, unsafe)


def _unsafe(path: Path, names: list[str]) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"refusing to load {path}: unpickling it would import and call {', '.join(sorted(names))}, "
        "which can run arbitrary code (nothing from it was executed)",
        "if you trust the file, re-save just its tensors elsewhere, e.g. "
        "torch.save(torch.load(SRC, weights_only=False)['state_dict'], 'clean.pth'), then convert clean.pth")
