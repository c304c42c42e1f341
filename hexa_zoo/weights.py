"""Where a zoo model's weights come from, and `load_trunk` for anything that holds a trunk.

`timm.create_model(NAME[.TAG], pretrained=True)` on a hexa-zoo model looks, in order, at:

1. an explicit `pretrained_cfg_overlay` (`file=`, `state_dict=`, `url=` or `hf_hub_id=`);
2. the local zoo, `$HEXA_ZOO_HOME/<name>.<tag>/model.safetensors` (default `~/.cache/hexa_zoo`);
3. the Hugging Face Hub, `<org>/<name>.<tag>` (org: `HEXA_ZOO_HF_ORG`, default `hexa-zoo`), first in
   the local Hub cache, then online;
4. the official release URL (MoCo-v2, DeepCluster-v2, SwAV), downloaded once into
   `$HEXA_ZOO_HOME/downloads/` and converted on the fly by `hexa_zoo.convert.timm_filter`.

Offline (`HF_HUB_OFFLINE=1` or `HEXA_ZOO_OFFLINE=1`, read at call time) nothing touches the network,
and when no source has the weights the error lists every place it looked and the `hexa` command
that produces or fetches them. Environment variables are read when called, never at import.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from . import checkpoint_files, convert
from .errors import CheckpointFormatError, ConfigError, HexaError, OfflineError, WeightsNotFoundError
from .fileio import atomic_path

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


# ----------------------------------------------------------------------------------- resolution

@dataclasses.dataclass
class WeightsSource:
    """One place the weights were found."""

    kind: str  # "file", "state dict", "local zoo", "Hub cache", "Hub", "official release", "url"
    location: str
    file: Path | None = None
    data_cfg: dict = dataclasses.field(default_factory=dict)  # preprocessing recorded beside the weights

    def __str__(self) -> str:
        return f"{self.kind}: {self.location}"


def find_weights(name: str, tag: str, url: str | None = None) -> WeightsSource:
    """The first source that has weights for `name.tag`, downloading only when online.

    Raises WeightsNotFoundError listing every place it looked and how to get the weights.
    """
    looked = []
    folder = zoo_folder(name, tag)
    if (folder / WEIGHTS_FILE).is_file():
        return WeightsSource("local zoo", str(folder), folder / WEIGHTS_FILE, _data_cfg(folder / CONFIG_FILE))
    looked.append(f"local zoo: {folder / WEIGHTS_FILE} (not there)")

    repo = hub_repo_id(name, tag)
    cached = hub_cached_file(repo)
    if cached:
        return WeightsSource("Hub cache", repo, cached, _data_cfg(hub_cached_file(repo, CONFIG_FILE)))
    if is_offline():
        looked.append(f"Hugging Face Hub: {repo} (not in the cache {hf_cache_dir()}; offline, so not asked)")
    else:
        try:
            return WeightsSource("Hub", repo, *_download_from_hub(repo))
        except Exception as err:  # any failure here just means "not from the Hub": we report it and go on
            looked.append(f"Hugging Face Hub: {repo} ({type(err).__name__}: {str(err).splitlines()[0][:160]})")

    if url:
        raw = official_download_path(url)
        if raw.is_file():
            return WeightsSource("official release", url, raw)
        if is_offline():
            looked.append(f"official release: {url} (not downloaded to {raw}; offline, so not asked)")
        else:
            try:
                return WeightsSource("official release", url, download_official(url))
            except (OSError, HexaError) as err:
                looked.append(f"official release: {url} ({str(err).splitlines()[0][:160]})")
    else:
        looked.append("official release: none for this model")

    others = [t for t in local_tags(name) if t != tag]
    hint = f" The local zoo has {', '.join(f'{name}.{t}' for t in others)}: ask for it by name." if others else ""
    raise WeightsNotFoundError(
        f"no weights for {name}.{tag}. Looked in:\n  - " + "\n  - ".join(looked) + hint,
        how_to_get(name, tag, url))


def how_to_get(name: str, tag: str, url: str | None) -> str:
    """The `hexa` commands that produce or fetch the weights of `name.tag`."""
    from .catalog import MODELS

    ways = []
    if url:
        ways.append(f"download and convert the official release (online): "
                    f"hexa zoo publish {url} --model {name} --tag {tag}")
        ways.append(f"with the file copied here: hexa zoo publish {Path(url).name} --model {name} --tag {tag}")
    method, arch = MODELS.get(name, (None, None))
    if method:
        data = "embedded" if tag == "embedded" else "/path/to/imagenet/train"
        ways.append(f"train and publish it: hexa pretrain --method {method} --arch {arch} --data {data} "
                    f"--out runs/{name}")
        ways.append(f"publish a checkpoint you have: hexa zoo publish CHECKPOINT --model {name} --tag {tag}")
    ways.append(f"fetch it from the Hub while online (HF_HUB_OFFLINE unset): hexa zoo fetch {name}.{tag}")
    return "\n  or ".join(ways)


def _download_from_hub(repo: str) -> tuple[Path, dict]:
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    # One HEAD request without retries first: hf_hub_download retries network errors with backoff
    # for tens of seconds, which a machine without a route to the Hub should not have to wait for.
    get_hf_file_metadata(hf_hub_url(repo, WEIGHTS_FILE), timeout=10)
    weights = Path(hf_hub_download(repo, WEIGHTS_FILE, cache_dir=hf_cache_dir()))
    try:
        config = Path(hf_hub_download(repo, CONFIG_FILE, cache_dir=hf_cache_dir()))
    except Exception:  # a weights-only repository is still usable
        config = None
    return weights, _data_cfg(config)


def download_official(url: str) -> Path:
    """Download an official release once into `$HEXA_ZOO_HOME/downloads/`, checking its md5 when published."""
    if is_offline():
        raise OfflineError(f"cannot download {url}: offline (HF_HUB_OFFLINE/HEXA_ZOO_OFFLINE is set)",
                           "unset HF_HUB_OFFLINE, or download the file elsewhere and pass its path")
    from torch.hub import download_url_to_file

    from .releases import release_by_url

    dest = official_download_path(url)
    release = release_by_url(url)
    md5 = release.checksum.split(":", 1)[1] if release and release.checksum and release.checksum.startswith("md5:") else None
    with atomic_path(dest) as tmp:
        download_url_to_file(url, str(tmp), progress=True)
        if md5:
            digest = hashlib.md5(tmp.read_bytes()).hexdigest()
            if not digest.startswith(md5):
                raise CheckpointFormatError(f"{url} downloaded with md5 {digest[:8]}, expected {md5}...",
                                            "retry the download; if it persists the release changed")
    return dest


def _data_cfg(config_path: Path | None) -> dict:
    if not config_path or not Path(config_path).is_file():
        return {}
    cfg = _read_config(config_path).get("pretrained_cfg", {})
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k in _DATA_FIELDS}


def _read_config(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointFormatError(f"{path} is not a readable config.json: {err}",
                                    "re-publish the folder with hexa zoo publish") from None


def _explicit_source(overlay: dict) -> WeightsSource | None:
    """The weights named by the caller in pretrained_cfg_overlay, checked now so a typo fails at once."""
    if overlay.get("state_dict") is not None:
        return WeightsSource("state dict", "pretrained_cfg_overlay['state_dict']")
    if overlay.get("file"):
        path = Path(overlay["file"]).expanduser()
        if path.is_dir() and (path / WEIGHTS_FILE).is_file():  # a zoo folder
            return WeightsSource("file", str(path), path / WEIGHTS_FILE, _data_cfg(path / CONFIG_FILE))
        if not path.is_file():
            raise WeightsNotFoundError(f"pretrained_cfg_overlay file {path} does not exist",
                                       "pass the path of a .safetensors file, a zoo folder or a checkpoint")
        return WeightsSource("file", str(path), path)
    if overlay.get("hf_hub_id"):
        return WeightsSource("Hub", str(overlay["hf_hub_id"]))
    if overlay.get("url"):
        if is_offline():
            raise OfflineError(f"cannot download {overlay['url']}: offline (HF_HUB_OFFLINE is set)",
                               "download it elsewhere and pass pretrained_cfg_overlay=dict(file=PATH)")
        return WeightsSource("url", str(overlay["url"]))
    return None


def resolve_cfg(name: str, pretrained_cfg: Any):
    """The PretrainedCfg for `name` given timm's `pretrained_cfg` argument (None, a tag, a dict or a cfg).

    A tag that is not registered is accepted when the local zoo has a folder for it (a run published
    under its own recipe tag); its config.json then supplies the preprocessing.
    """
    from timm.models import PretrainedCfg, get_pretrained_cfg

    if isinstance(pretrained_cfg, PretrainedCfg):
        return pretrained_cfg
    if isinstance(pretrained_cfg, dict):
        return PretrainedCfg(**pretrained_cfg)
    tag = pretrained_cfg or ""
    try:
        return get_pretrained_cfg(f"{name}.{tag}" if tag else name, allow_unregistered=False)
    except RuntimeError:
        pass
    folder = zoo_folder(name, tag)
    if (folder / CONFIG_FILE).is_file():
        base = get_pretrained_cfg(name)
        return dataclasses.replace(base, tag=tag, url=None, hf_hub_id=hub_repo_id(name, tag),
                                   description=f"{name} weights published locally under tag {tag}",
                                   **_data_cfg(folder / CONFIG_FILE))
    from timm.models import get_arch_pretrained_cfgs

    known = sorted(get_arch_pretrained_cfgs(name)) + [f"{name}.{t}" for t in local_tags(name)]
    raise WeightsNotFoundError(f"{name} has no tag {tag!r} (registered or in the local zoo {zoo_home()})",
                               f"use one of {', '.join(sorted(set(known)))}, or publish weights under that tag: "
                               f"hexa zoo publish CHECKPOINT --model {name} --tag {tag}")


def build_model(name: str, model_args: dict, pretrained: bool = False, *, pretrained_cfg: Any = None,
                 pretrained_cfg_overlay: dict | None = None, **kwargs) -> torch.nn.Module:
    """Build a registered hexa-zoo ResNet, resolving its weights as the module docstring says.

    This is what the timm entrypoints in `hexa_zoo.models` call. The model gets a `weights_source`
    attribute naming where its weights came from (None without weights).
    """
    from timm.models import build_model_with_cfg
    from timm.models.resnet import ResNet

    cfg = resolve_cfg(name, pretrained_cfg)
    overlay = dict(pretrained_cfg_overlay or {})
    source = None
    if pretrained:
        source = _explicit_source(overlay) or find_weights(name, cfg.tag or "", cfg.url)
        if source.file is not None and source.file.suffix == ".safetensors":
            checkpoint_files.check_safetensors(source.file)
            overlay["file"] = str(source.file)
        elif source.file is not None:  # a pickle: we load it (safely) ourselves, timm gets the tensors
            overlay["state_dict"] = checkpoint_files.read_checkpoint(source.file)
        overlay = {**source.data_cfg, **overlay}
    model = build_model_with_cfg(
        ResNet, name, pretrained, pretrained_cfg=dataclasses.asdict(cfg), pretrained_cfg_overlay=overlay,
        pretrained_filter_fn=convert.timm_filter, **model_args, **kwargs)
    model.pretrained_cfg.pop("state_dict", None)  # an in-memory overlay must not ride along with the model
    model.weights_source = str(source) if source else None
    return model


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

    from .catalog import MODELS

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
        if base not in MODELS:
            raise WeightsNotFoundError(f"unknown model {text!r}: not a registered hexa-zoo model, file or folder",
                                       f"use one of {', '.join(MODELS)} (hexa zoo list shows tags), or a path")
        model_arch = MODELS[base][1]
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
    config = _read_config(config_path)
    checkpoint_files.check_safetensors(path / WEIGHTS_FILE)
    try:
        model = timm.create_model(f"local-dir:{path}", pretrained=True, num_classes=0)
    except RuntimeError as err:
        raise CheckpointFormatError(f"the weights in {path} do not fit {config.get('architecture')}: "
                                    f"{str(err).splitlines()[0][:300]}", "re-publish the folder") from None
    about = config.get("hexa_zoo", {})
    name = f"{about['model']}.{about['tag']}" if about.get("model") else path.name
    return model, name, config.get("architecture"), f"folder: {path}"
