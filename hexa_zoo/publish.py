"""Publish a trunk to the local zoo as a folder in the Hugging Face Hub layout, and push it.

A zoo folder `<zoo>/<model>.<tag>/` holds what timm's `push_to_hub` writes:

- `config.json`: `architecture` (the plain timm name, e.g. `resnet50`, so no hexa_zoo import is
  needed to load it), `num_classes`, `num_features`, `global_pool`, `model_args` and the
  `pretrained_cfg` (preprocessing, license, papers...), written by timm's own `save_config_for_hf`,
  plus a `hexa_zoo` entry naming the zoo model and tag;
- `model.safetensors`: the trunk's state dict, serialised without metadata so its sha256 is the
  `weights_sha256` that `load_trunk` reports;
- `README.md`: the model card (description, usage, data, recipe, metrics, license, citation).

It loads with `timm.create_model("local-dir:PATH", pretrained=True)`, and, with hexa_zoo imported,
`timm.create_model("<model>.<tag>", pretrained=True)` finds it in the local zoo.

`recipe_of` and `zoo_folder_of` read a published folder back (the leaderboard links each row to its
recipe; the demo recognises a finished run), here beside the card writer so the two formats move together.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from . import catalog, convert
from .errors import CheckpointFormatError, ConfigError, HexaError, OfflineError
from .fileio import atomic_path
from .release_files import download_official
from .releases import RELEASES, ZOO_MODELS, model_tags
from .version import __version__
from .weights import CONFIG_FILE, WEIGHTS_FILE, check_zoo_name, is_offline, weights_sha256, zoo_folder, zoo_home

def split_name(model: str, tag: str | None = None) -> tuple[str, str]:
    """`("hexa_moco_r18.embedded", None)` -> `("hexa_moco_r18", "embedded")`; the default tag when none."""
    name, _, name_tag = model.partition(".")
    try:
        check_zoo_name(name, "model name")
    except ConfigError as err:  # name the whole spec: '../x' splits into '' and '/x'
        raise ConfigError(f"{model!r} is not a usable model name (NAME or NAME.TAG)", err.fix) from None
    if tag and name_tag and tag != name_tag:
        raise ConfigError(f"two tags given: {model!r} and --tag {tag}", "give the tag once")
    tag = tag or name_tag or (model_tags(name)[0] if name in ZOO_MODELS else "")
    if not tag:
        raise ConfigError(f"{name} is not a registered hexa-zoo model, so it has no default tag",
                          f"give one, e.g. --tag embedded (registered models: {', '.join(ZOO_MODELS)})")
    return name, check_zoo_name(tag, "tag")


def trunk_weights(weights: Any, arch: str | None,
                  layout: str = "auto") -> tuple[dict[str, torch.Tensor], str, str, str | None]:
    """The trunk state dict held by `weights` (state dict, zoo folder, file or URL), where it came from,
    its timm architecture (`arch`, or inferred when None) and the method the file says trained it (or None)."""
    if isinstance(weights, Mapping):
        source, checkpoint = "state dict", weights
    else:
        text = str(weights)
        if text.startswith(("http://", "https://")):
            checkpoint, source = download_official(text), text
        else:
            checkpoint = Path(text).expanduser()
            if checkpoint.is_dir():
                checkpoint = checkpoint / WEIGHTS_FILE
            source = str(checkpoint)
    try:
        converted = convert.to_timm(checkpoint, layout=layout, arch=arch, source=source)
    except CheckpointFormatError:
        if arch is None:
            raise
        try:  # say plainly when it is simply another architecture
            other = convert.to_timm(checkpoint, source=source)
        except CheckpointFormatError:
            other = None
        if other is not None and other.arch != arch:
            raise CheckpointFormatError(f"{source} holds a {other.arch} trunk, but this model is a {arch}",
                                        f"publish it under a {other.arch} model name") from None
        raise
    method = converted.meta.get("method") if isinstance(converted.meta.get("method"), str) else None
    return converted.state_dict, f"{source} ({converted.layout} layout)", converted.arch, method


def publish(weights: Any, model: str, *, tag: str | None = None, zoo: Path | None = None,
            card: dict | None = None, push_to_hub: str | None = None, arch: str | None = None,
            overwrite: bool = False, layout: str = "auto") -> Path:
    """Write `<zoo>/<model>.<tag>/` (config.json, model.safetensors, README.md) atomically; return it.

    `weights`: a trunk state dict (timm key names, or any layout hexa_zoo.convert reads), a
    safetensors file, a checkpoint, a zoo folder, or an official release URL. `card` (all optional):
    description, recipe (dict), data (str), metrics (dict), license, citation, provenance (rows for the card's
    table: where a release came from and how it was checked), release (recorded in config.json). `layout`: the
    checkpoint's layout for hexa_zoo.convert (default: detected). `push_to_hub`: a Hub
    repository id to upload the folder to afterwards (the local folder stays whatever happens).

    `model` is normally a registered name (its architecture is checked). Any other name publishes a
    folder that `load_trunk` and timm's `local-dir:` read but `timm.create_model(name)` does not; its
    architecture is `arch`, else the card's `recipe["arch"]`, else inferred from the weights.

    An existing `<model>.<tag>` folder is kept: publishing onto it is a ConfigError unless `overwrite`,
    and then the new card records the weights it replaced. The method on the card is the one the
    checkpoint (or the card's recipe) says trained the weights; a registered name of another method is refused.
    """
    import timm
    from safetensors.torch import save

    from .catalog import MODELS
    from .timm_compat import write_hf_config

    name, tag = split_name(model, tag)
    folder = zoo_folder(name, tag, zoo)
    replaced = published_identity(folder)
    if replaced and not overwrite:
        raise ConfigError(f"the zoo already holds {name}.{tag} at {folder} (weights sha256 "
                          f"{replaced['weights_sha256'][:12]}..., from {replaced['source']}); nothing was written",
                          "publish under another tag (--tag NAME), or pass --overwrite to replace it "
                          "(the new model card records what it replaced)")
    card = dict(card or {})
    recipe = card.get("recipe") if isinstance(card.get("recipe"), Mapping) else {}
    if name in ZOO_MODELS:
        registered_arch = ZOO_MODELS[name]
        method = MODELS[name][0] if name in MODELS else RELEASES[f"{name}.{model_tags(name)[0]}"].method
        if arch and arch != registered_arch:
            raise ConfigError(f"{name} is a {registered_arch}, not a {arch}", f"drop arch or use {registered_arch}")
        arch = registered_arch
    else:
        method, arch = recipe.get("method") or "unknown", arch or recipe.get("arch")
    state_dict, source, arch, trained_by = trunk_weights(weights, arch, layout)
    said = {m for m in (trained_by, recipe.get("method")) if m}
    if len(said) > 1:
        raise ConfigError(f"{source} says it was trained with {trained_by}, its recipe says {recipe.get('method')}",
                          "give the recipe of the run that wrote the checkpoint")
    if said:
        trained_by = said.pop()
        if name in MODELS and trained_by != method:
            raise ConfigError(f"{source} was trained with {trained_by}, but {name} is a {method} model: its card "
                              f"would describe another method",
                              f"publish it as {catalog.zoo_model_name(trained_by, arch)}" if trained_by in catalog.METHODS
                              else "publish it under a name that is not a registered model")
        method = trained_by
    pretrained_cfg = _pretrained_cfg(name, tag, arch, card)
    net = timm.create_model(arch, num_classes=0, pretrained_cfg=pretrained_cfg)
    net.load_state_dict(state_dict, strict=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    sha256 = weights_sha256(tensors)
    about = {"model": name, "tag": tag, "method": method, "registered": name in ZOO_MODELS, "source": source,
             "weights_sha256": sha256, "hexa_zoo_version": __version__}
    if card.get("release"):
        about["release"] = card["release"]
    if replaced:
        about["replaced"] = replaced
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        (tmp / WEIGHTS_FILE).write_bytes(save(tensors))
        write_hf_config(net, tmp / CONFIG_FILE, {"hexa_zoo": about})
        (tmp / "README.md").write_text(model_card(name, tag, net.pretrained_cfg, about, card), encoding="utf-8")
    if push_to_hub:
        push_folder(folder, push_to_hub)
    return folder


def _pretrained_cfg(name: str, tag: str, arch: str, card: dict) -> dict:
    from timm.models import get_pretrained_cfg

    if name not in ZOO_MODELS:  # timm's own preprocessing for the architecture, no weight sources
        cfg = dataclasses.replace(get_pretrained_cfg(arch) or get_pretrained_cfg("resnet50"), tag=tag, num_classes=0,
                                  license="mit", description=f"{arch} trunk published by hexa-zoo as {name}.{tag}",
                                  origin_url=None, paper_ids=None, paper_name=None, notes=None)
    else:
        try:
            cfg = get_pretrained_cfg(f"{name}.{tag}", allow_unregistered=False)
        except RuntimeError:  # a tag of the run's own choosing: preprocessing of the default tag
            cfg = dataclasses.replace(get_pretrained_cfg(name), tag=tag, url=None, notes=None)
    overrides = {k: card[k] for k in ("description", "license") if card.get(k)}
    cfg = dataclasses.replace(cfg, architecture=arch, hf_hub_id=None, url=None, source=None, file=None, **overrides)
    return cfg.to_dict()


def model_card(name: str, tag: str, pretrained_cfg: dict, about: dict, card: dict) -> str:
    """The README.md of a zoo folder, in the Hub's model card format."""
    import yaml

    from .weights import hub_repo_id

    license_ = card.get("license") or pretrained_cfg.get("license") or "other"
    size = pretrained_cfg.get("input_size", (3, 224, 224))
    paper_ids = pretrained_cfg.get("paper_ids") or ()
    paper_ids = [paper_ids] if isinstance(paper_ids, str) else list(paper_ids)
    lines = [
        "---", f"license: {license_}", "library_name: timm", "pipeline_tag: image-feature-extraction",
        "tags:", "- image-feature-extraction", "- timm", "- hexa-zoo", "- self-supervised", "---", "",
        f"# {name}.{tag}", "", card.get("description") or pretrained_cfg.get("description", ""), "",
        "| | |", "|---|---|",
        f"| Architecture | timm `{pretrained_cfg.get('architecture')}` trunk, pooled features (num_classes=0) |",
        f"| Method | {about['method']} |",
        f"| Input | {size[1]}x{size[2]} RGB, mean {tuple(pretrained_cfg.get('mean', ()))}, "
        f"std {tuple(pretrained_cfg.get('std', ()))} |",
        f"| Weights | `model.safetensors`, sha256 `{about['weights_sha256']}` |",
        f"| Converted/published from | {about['source']} |",
        *[f"| {key} | {value} |" for key, value in (card.get("provenance") or {}).items()],
        *([f"| Replaced | weights sha256 `{about['replaced']['weights_sha256']}` from "
           f"{about['replaced']['source']} |"] if about.get("replaced") else []),
        f"| License | {license_} |",
        f"| Papers | {', '.join(paper_ids) or '-'} |",
        "", "## How to use", "", "```python", "import timm", "",
        *(["# with hexa-zoo installed (the local zoo, then the Hub)", "import hexa_zoo",
           f'model = timm.create_model("{name}.{tag}", pretrained=True)', ""] if about.get("registered") else
          ["# with hexa-zoo installed", "import hexa_zoo",
           'model, info = hexa_zoo.load_trunk("/path/to/this/folder")', ""]),
        "# plain timm, from this folder or from the Hub",
        'model = timm.create_model("local-dir:/path/to/this/folder", pretrained=True)',
        f'model = timm.create_model("hf-hub:{hub_repo_id(name, tag)}", pretrained=True)', "```", "",
        "## Training data", "", card.get("data") or "Not recorded.", "",
        "## Recipe", "",
    ]
    recipe = card.get("recipe")
    lines += ["```yaml", yaml.safe_dump(recipe, sort_keys=True).rstrip(), "```"] if recipe else ["Not recorded."]
    lines += ["", "## Metrics", ""]
    metrics = card.get("metrics") or {}
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in sorted(metrics.items())]
    else:
        lines.append("None recorded yet: run `hexa transfer suite --model "
                     f"{name}.{tag} --suite embedded --out results/`.")
    citation = card.get("citation") or catalog.citation(about["method"])
    lines += ["", "## Citation", ""] + (["```bibtex", citation.strip(), "```", ""] if citation else ["Not recorded.", ""])
    return "\n".join(lines)


# ---------------------------------------------------------------- reading a zoo folder back

def recorded_about(folder: Path) -> dict:
    """The `hexa_zoo` entry `publish` wrote into a zoo folder's config.json (wherever timm nested it); {} when
    the folder has none (not a zoo folder, or no readable config.json)."""
    try:
        config = json.loads((Path(folder) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return {}
    about = _find_key(config, "hexa_zoo")
    return about if isinstance(about, dict) else {}


def published_identity(folder: Path) -> dict | None:
    """`{"weights_sha256", "source", "out"}` of the zoo folder at `folder`, or None when nothing is there."""
    if not folder.exists():
        return None
    about = recorded_about(folder)
    if not about.get("weights_sha256") and (folder / WEIGHTS_FILE).is_file():
        from .fileio import sha256_file

        about = dict(about, weights_sha256=sha256_file(folder / WEIGHTS_FILE))
    return {"weights_sha256": str(about.get("weights_sha256") or "unknown"),
            "source": str(about.get("source") or "unknown source"), "out": str(recipe_of(folder).get("out") or "")}


def zoo_folder_of(model: dict) -> Path | None:
    """The zoo folder the weights came from, if it is still on this machine."""
    source = model.get("source")
    candidates = []
    if isinstance(source, str) and source:
        src = Path(source)
        candidates += [src, src.parent]
    name = model.get("name")
    if isinstance(name, str) and name and "/" not in name:
        candidates.append(zoo_home() / name)
    for c in candidates:
        try:
            if c.is_dir() and (c / "config.json").is_file():
                return c
        except OSError:
            continue
    return None



def recipe_of(folder: Path | None) -> dict:
    """The pre-training recipe a zoo folder records (arch, epochs, out...), and the file to link.

    Looked for in config.json (a `recipe` key anywhere), else in the model card's `## Recipe`
    section (the fenced YAML block `model_card` writes).
    """
    if folder is None:
        return {}
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    recipe = _find_key(config, "recipe")
    card = folder / "README.md"
    if not isinstance(recipe, dict) and card.is_file():
        recipe = _card_recipe(card.read_text(encoding="utf-8", errors="replace"))
    recipe = dict(recipe) if isinstance(recipe, dict) else {}
    recipe.setdefault("arch", config.get("architecture", ""))
    if isinstance(sha := _find_key(config, "weights_sha256"), str):
        recipe["weights_sha256"] = sha
    recipe["file"] = "README.md" if card.is_file() else "config.json"
    return recipe


def _card_recipe(card: str) -> dict | None:
    import yaml

    m = re.search(r"^## Recipe\s*\n+```ya?ml\n(.*?)^```", card, flags=re.M | re.S)
    if not m:
        return None
    try:
        loaded = yaml.safe_load(m[1])
    except yaml.YAMLError:
        return None
    return loaded if isinstance(loaded, dict) else None


def _find_key(node, key: str):
    if isinstance(node, dict):
        if key in node:
            return node[key]
        for v in node.values():
            if (found := _find_key(v, key)) is not None:
                return found
    return None


def push_folder(folder: Path, repo_id: str) -> str:
    """Upload a zoo folder to the Hub as it is; offline this fails at once and the folder stays."""
    if is_offline():
        raise OfflineError(f"cannot push to the Hub repository {repo_id}: offline (HF_HUB_OFFLINE is set). "
                           f"The local folder is kept: {folder}",
                           f"when online, run: hf upload {repo_id} {folder}")
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        repo = api.create_repo(repo_id, exist_ok=True).repo_id
        api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message=f"hexa-zoo: {folder.name}")
    except Exception as err:  # auth, network, permissions: all mean the same for the user
        raise HexaError(f"pushing {folder} to {repo_id} failed ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:200]}). The local folder is kept.",
                        f"log in with `hf auth login`, check the network, then run: hf upload {repo_id} {folder}") from None
    return repo
