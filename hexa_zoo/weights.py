"""Where zoo weights live, and `load_trunk` for anything that holds a trunk.

The local zoo is `$HEXA_ZOO_HOME` (default `~/.cache/hexa_zoo`): one folder per `<name>.<tag>` (config.json,
model.safetensors, README.md), and `downloads/` for release files fetched from their authors' URLs. The Hub
organisation is `HEXA_ZOO_HF_ORG` (default `hexa-zoo`). Offline (`HF_HUB_OFFLINE=1` or `HEXA_ZOO_OFFLINE=1`,
read at call time) nothing touches the network. Environment variables are read when called, never at
import. The order in which a model's weights are looked for is `hexa_zoo.loading`'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch

from . import checkpoint_files, convert
from .errors import CheckpointFormatError, ConfigError, WeightsNotFoundError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
DEFAULT_HF_ORG = "hexa-zoo"
_TRUE = {"1", "on", "yes", "true"}
# Preprocessing fields a zoo folder's config.json may set for the weights it holds.
_DATA_FIELDS = ("input_size", "mean", "std", "crop_pct", "interpolation", "crop_mode", "test_input_size")


# ------------------------------------------------------------------------------------ environment

def zoo_home() -> Path:
    """The local zoo: `HEXA_ZOO_HOME`, default `~/.cache/hexa_zoo`."""
    return Path(os.environ.get("HEXA_ZOO_HOME") or Path.home() / ".cache" / "hexa_zoo").expanduser()


def is_offline() -> bool:
    """True when `HF_HUB_OFFLINE` or `HEXA_ZOO_OFFLINE` is set to a true value."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "HEXA_ZOO_OFFLINE"))


def hf_org() -> str:
    """The Hugging Face organisation holding hexa-zoo weights (`HEXA_ZOO_HF_ORG`)."""
    return os.environ.get("HEXA_ZOO_HF_ORG") or DEFAULT_HF_ORG


def hub_repo_id(name: str, tag: str) -> str:
    return f"{hf_org()}/{name}.{tag}" if tag else f"{hf_org()}/{name}"


def hf_cache_dir() -> Path:
    """huggingface_hub's cache, computed from the environment now (the library reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(hf_home).expanduser() / "hub"


def check_zoo_name(text: str, what: str) -> str:
    """A model name or tag is one path component: letters, digits, '_' and '-' (so no folder leaves the zoo)."""
    if not text or not all(c.isalnum() or c in "_-" for c in text):
        raise ConfigError(f"{text!r} is not a usable {what}", f"a {what} uses only letters, digits, '_' and '-'")
    return text


def zoo_folder(name: str, tag: str, zoo: Path | None = None) -> Path:
    """`<zoo>/<name>.<tag>`; the name and tag are checked, and the folder must lie inside the zoo."""
    root = Path(zoo or zoo_home())
    check_zoo_name(name, "model name")
    folder = root / (f"{name}.{check_zoo_name(tag, 'tag')}" if tag else name)
    if os.path.realpath(folder.parent) != os.path.realpath(root):
        raise ConfigError(f"{folder} is not inside the zoo {root}", "use a plain model name and tag")
    return folder


def local_tags(name: str, zoo: Path | None = None) -> list[str]:
    """Tags of `name` that have a folder with weights in the local zoo."""
    root = Path(zoo or zoo_home())
    if not root.is_dir():
        return []
    return sorted(p.name.split(".", 1)[1] for p in root.glob(f"{name}.*")
                  if (p / WEIGHTS_FILE).is_file() and not p.name.startswith("."))


def official_download_path(url: str) -> Path:
    return zoo_home() / "downloads" / Path(url).name


def hub_cached_file(repo_id: str, filename: str = WEIGHTS_FILE) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=hf_cache_dir())
    return Path(found) if isinstance(found, str) else None


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 of the state dict serialised as safetensors without metadata.

    The zoo writes `model.safetensors` exactly so, so for a zoo folder this is the file's sha256.
    """
    from safetensors.torch import save

    return hashlib.sha256(save(_plain_tensors(state_dict))).hexdigest()


def _plain_tensors(state_dict) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}


# -------------------------------------------------------------------------------------- sources

@dataclasses.dataclass
class WeightsSource:
    """One place the weights were found."""

    kind: str  # "file", "state dict", "local zoo", "Hub cache", "Hub", "official release", "url"
    location: str
    file: Path | None = None
    data_cfg: dict = dataclasses.field(default_factory=dict)  # preprocessing recorded beside the weights

    def __str__(self) -> str:
        return f"{self.kind}: {self.location}"


def download_from_hub(repo: str) -> tuple[Path, dict]:
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    # One HEAD request without retries first: hf_hub_download retries network errors with backoff
    # for tens of seconds, which a machine without a route to the Hub should not have to wait for.
    get_hf_file_metadata(hf_hub_url(repo, WEIGHTS_FILE), timeout=10)
    weights = Path(hf_hub_download(repo, WEIGHTS_FILE, cache_dir=hf_cache_dir()))
    try:
        config = Path(hf_hub_download(repo, CONFIG_FILE, cache_dir=hf_cache_dir()))
    except Exception:  # a weights-only repository is still usable
        config = None
    return weights, data_cfg_of(config)


def data_cfg_of(config_path: Path | None) -> dict:
    """The preprocessing a zoo folder's config.json records for its weights ({} when none)."""
    if not config_path or not Path(config_path).is_file():
        return {}
    cfg = read_config(config_path).get("pretrained_cfg", {})
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k in _DATA_FIELDS}


def read_config(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointFormatError(f"{path} is not a readable config.json: {err}",
                                    "re-publish the folder with hexa zoo publish") from None


# ------------------------------------------------------------------------------------- load_trunk

def load_trunk(spec: str | os.PathLike, *, arch: str | None = None) -> tuple[torch.nn.Module, dict]:
    """A timm trunk (num_classes=0, eval mode) and a description of its weights, from any spec.

    `spec` is a registered name with optional tag (`hexa_moco_r18`, `moco_v2_r50.in1k_ep200`), a zoo
    folder (config.json + model.safetensors, optionally written `local-dir:PATH`), a `.safetensors`
    file, or a foreign checkpoint (MoCo, SwAV, DeepCluster-v2, hexa training checkpoint), converted
    in memory. `arch` (a timm name) is needed only for a checkpoint whose architecture cannot be inferred.

    Returns `(model, {"name", "arch", "weights_sha256", "source", "mean", "std"})`.
    """
    import timm

    from .releases import ZOO_MODELS

    text = str(spec)
    path = Path(text.removeprefix("local-dir:")).expanduser()
    if path.is_dir():
        model, name, model_arch, source = _load_folder(path)
    elif path.is_file():
        converted = convert.to_timm(path, arch=arch)
        model = timm.create_model(converted.arch, num_classes=0)
        model.load_state_dict(converted.state_dict)
        name, model_arch, source = path.name, converted.arch, f"file: {path} ({converted.layout} layout)"
    elif text.startswith("local-dir:") or os.sep in text or text.endswith((".pth", ".pt", ".tar", ".safetensors")):
        raise WeightsNotFoundError(f"no file or folder at {path}", "check the path")
    else:
        base = text.split(".", 1)[0]
        if base not in ZOO_MODELS:
            raise WeightsNotFoundError(f"unknown model {text!r}: not a registered hexa-zoo model, file or folder",
                                       f"use one of {', '.join(ZOO_MODELS)} (hexa zoo list shows tags), or a path")
        model_arch = ZOO_MODELS[base]
        if arch and arch != model_arch:
            raise ConfigError(f"{base} is a {model_arch}, not a {arch}", f"drop --arch or use arch={model_arch}")
        model = timm.create_model(text, pretrained=True, num_classes=0)
        name, source = f"{base}.{model.pretrained_cfg.get('tag') or ''}".rstrip("."), model.weights_source
    model.eval()
    cfg = model.pretrained_cfg
    return model, {"name": name, "arch": model_arch, "weights_sha256": weights_sha256(model.state_dict()),
                   "source": source, "mean": tuple(cfg.get("mean", ())), "std": tuple(cfg.get("std", ()))}


def _load_folder(path: Path):
    import timm

    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise WeightsNotFoundError(f"{path} is not a zoo folder: it has no {CONFIG_FILE}",
                                   "pass a folder written by hexa zoo publish, or the weights file itself")
    if not (path / WEIGHTS_FILE).is_file():
        raise WeightsNotFoundError(f"zoo folder {path} has no {WEIGHTS_FILE}", "re-publish it with hexa zoo publish")
    config = read_config(config_path)
    checkpoint_files.check_safetensors(path / WEIGHTS_FILE)
    try:
        model = timm.create_model(f"local-dir:{path}", pretrained=True, num_classes=0)
    except RuntimeError as err:
        raise CheckpointFormatError(f"the weights in {path} do not fit {config.get('architecture')}: "
                                    f"{str(err).splitlines()[0][:300]}", "re-publish the folder") from None
    about = config.get("hexa_zoo", {})
    name = f"{about['model']}.{about['tag']}" if about.get("model") else path.name
    return model, name, config.get("architecture"), f"folder: {path}"
