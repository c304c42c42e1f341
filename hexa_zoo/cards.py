"""Model cards by the weights they describe: find a zoo folder's card by weights sha256, and write its
`model-index` (the evaluation results the Hugging Face Hub shows on a model's page).

A zoo folder's `config.json` records the sha256 of its `model.safetensors` (hexa_zoo.publish writes it), and
every result record names the sha256 of the weights it measured; `find_card` joins the two, so a result is
linked to the card of exactly the weights it measured, not to whatever a folder of that name holds now.
`write_model_index` rewrites only the card's metadata (huggingface_hub's `ModelCard` and `EvalResult`); the
folder's weights and config.json are untouched, so plain timm still loads it with `local-dir:`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from .fileio import atomic_write_text
from .publish import recorded_about

CARD_FILE = "README.md"


def card_weights_sha256(folder: Path) -> str | None:
    """The weights sha256 a zoo folder's config.json records (None: not a zoo folder, or none recorded)."""
    sha = recorded_about(folder).get("weights_sha256")
    return sha if isinstance(sha, str) and sha else None


def find_card(weights_sha256: str, hints: Sequence[Path | None] = (), zoo: Path | None = None) -> Path | None:
    """The zoo folder whose card describes the weights `weights_sha256`: the `hints` first (the folder a
    record names), then every folder of the local zoo (`zoo`, default HEXA_ZOO_HOME). None: no folder on
    this machine holds those weights any more (deleted, or republished with other weights)."""
    if not weights_sha256:
        return None
    if zoo is None:
        from .weights import zoo_home

        zoo = zoo_home()
    candidates = [Path(h) for h in hints if h is not None]
    try:
        candidates += sorted(p for p in Path(zoo).iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        pass
    for folder in candidates:
        if card_weights_sha256(folder) == weights_sha256 and (folder / CARD_FILE).is_file():
            return folder
    return None


def write_model_index(folder: Path, results: Iterable) -> Path:
    """Replace the `model-index` of `folder`'s card with `results` (huggingface_hub EvalResult objects; none
    removes it). The rest of the card, its metadata and text, stays as it was. Returns the card's path."""
    from huggingface_hub import ModelCard

    path = Path(folder) / CARD_FILE
    card = ModelCard.load(path)
    results = list(results)
    card.data.model_name = os.path.basename(os.path.normpath(folder)) if results else None
    card.data.eval_results = results or None
    return atomic_write_text(path, str(card) if str(card).endswith("\n") else f"{card}\n")
