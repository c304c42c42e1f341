"""How `timm.create_model(NAME[.TAG], pretrained=True)` finds a hexa-zoo model's weights, and `fetch_release`.

A registered hexa-zoo model's weights are looked for, in order, in:

1. an explicit `pretrained_cfg_overlay` (`file=`, `state_dict=`, `url=` or `hf_hub_id=`);
2. the local zoo, `$HEXA_ZOO_HOME/<name>.<tag>/model.safetensors` (default `~/.cache/hexa_zoo`);
3. the Hugging Face Hub, `<org>/<name>.<tag>` (org: `HEXA_ZOO_HF_ORG`, default `hexa-zoo`), first in
   the local Hub cache, then online;
4. the release (`hexa_zoo.releases`): its file is downloaded once into `$HEXA_ZOO_HOME/downloads/`, checked
   (`hexa_zoo.release_files`), converted once into the local zoo with its model card (`fetch_release`), and
   read from there afterwards.

Offline (`HF_HUB_OFFLINE=1` or `HEXA_ZOO_OFFLINE=1`) nothing touches the network, and when no source has the
weights the error lists every place it looked and the `hexa` commands that produce or fetch them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from . import checkpoint_files, convert
from .catalog import MODELS
from .errors import (CheckpointFormatError, HexaError, IntegrityError, OfflineError, UnsafeCheckpointError,
                     WeightsNotFoundError)
from .publish import publish
from .release_files import by_hand, check_file, download_official, record_first_use
from .releases import RELEASES, Release, release_by_url
from .weights import (CONFIG_FILE, WEIGHTS_FILE, WeightsSource, data_cfg_of, download_from_hub, hf_cache_dir,
                      hub_cached_file, hub_repo_id, is_offline, local_tags, official_download_path, zoo_folder,
                      zoo_home)


def find_weights(name: str, tag: str, url: str | None = None) -> WeightsSource:
    """The first source that has weights for `name.tag`, downloading only when online.

    Raises WeightsNotFoundError listing every place it looked and how to get the weights.
    """
    looked = []
    folder = zoo_folder(name, tag)
    if (folder / WEIGHTS_FILE).is_file():
        return WeightsSource("local zoo", str(folder), folder / WEIGHTS_FILE, data_cfg_of(folder / CONFIG_FILE))
    looked.append(f"local zoo: {folder / WEIGHTS_FILE} (not there)")

    repo = hub_repo_id(name, tag)
    cached = hub_cached_file(repo)
    if cached:
        return WeightsSource("Hub cache", repo, cached, data_cfg_of(hub_cached_file(repo, CONFIG_FILE)))
    if is_offline():
        looked.append(f"Hugging Face Hub: {repo} (not in the cache {hf_cache_dir()}; offline, so not asked)")
    else:
        try:
            return WeightsSource("Hub", repo, *download_from_hub(repo))
        except Exception as err:  # any failure here just means "not from the Hub": we report it and go on
            looked.append(f"Hugging Face Hub: {repo} ({type(err).__name__}: {str(err).splitlines()[0][:160]})")

    release = RELEASES.get(f"{name}.{tag}") or (release_by_url(url) if url else None)
    if release:
        raw = official_download_path(release.url)
        if is_offline() and not raw.is_file():
            looked.append(f"official release: {release.url} (not downloaded to {raw}; offline, so not asked)")
        else:
            try:
                folder = fetch_release(release)
                return WeightsSource("local zoo", str(folder), folder / WEIGHTS_FILE, data_cfg_of(folder / CONFIG_FILE))
            except (IntegrityError, CheckpointFormatError, UnsafeCheckpointError):
                raise  # a file that fails its check or its conversion is refused, not reported as "not found"
            except (OSError, HexaError) as err:
                looked.append(f"official release: {release.url} ({str(err).splitlines()[0][:200]})")
    elif url:
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
    ways = []
    release = RELEASES.get(f"{name}.{tag}") or (release_by_url(url) if url else None)
    if release:
        ways.append(f"download, check and convert the release (online): hexa zoo fetch {release.name}")
        ways.append(by_hand(release))
    elif url:
        ways.append(f"download and convert it (online): hexa zoo publish {url} --model {name} --tag {tag}")
    method, arch = MODELS.get(name, (None, None))
    if method:
        data = "embedded" if tag == "embedded" else "/path/to/imagenet/train"
        ways.append(f"train and publish it: hexa pretrain --method {method} --arch {arch} --data {data} "
                    f"--out runs/{name}")
        ways.append(f"publish a checkpoint you have: hexa zoo publish CHECKPOINT --model {name} --tag {tag}")
    ways.append(f"fetch it from the Hub while online (HF_HUB_OFFLINE unset): hexa zoo fetch {name}.{tag}")
    return "\n  or ".join(ways)


def _explicit_source(overlay: dict) -> WeightsSource | None:
    """The weights named by the caller in pretrained_cfg_overlay, checked now so a typo fails at once."""
    if overlay.get("state_dict") is not None:
        return WeightsSource("state dict", "pretrained_cfg_overlay['state_dict']")
    if overlay.get("file"):
        path = Path(overlay["file"]).expanduser()
        if path.is_dir() and (path / WEIGHTS_FILE).is_file():  # a zoo folder
            return WeightsSource("file", str(path), path / WEIGHTS_FILE, data_cfg_of(path / CONFIG_FILE))
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
                                   **data_cfg_of(folder / CONFIG_FILE))
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


# ---------------------------------------------------------------------------------------------- releases

def fetch_release(release: Release, file: str | Path | None = None) -> Path:
    """The zoo folder of `release`: there already (nothing is downloaded), or made now from `file` (a copy
    downloaded, and for TF / JAX originals converted, by hand) or from the release URL.

    The file is checked (`release_files.check_file`), converted once and cached with its model card; its sha256
    is recorded at first use. A file that fails its check or its conversion leaves nothing in the zoo, and a
    download of ours that failed is deleted, so the next fetch downloads it again.
    """
    folder = zoo_folder(release.model, release.tag)
    if file is None and (folder / WEIGHTS_FILE).is_file():
        return folder
    if file is not None:
        raw, ours = Path(file).expanduser(), False
        if not raw.is_file():
            raise WeightsNotFoundError(f"no file at {raw}", f"pass the file you downloaded: {by_hand(release)}")
    elif release.convert_with:
        raise WeightsNotFoundError(f"{release.name}: the file at {release.url} is not a PyTorch checkpoint; "
                                   f"it needs {release.convert_with} first", by_hand(release))
    else:
        raw, ours = official_download_path(release.url), True
        if not raw.is_file():
            download_official(release.url)
    try:
        check = check_file(raw, release)
        folder = publish(raw, release.name, layout=release.layout, card=release_card(release, check))
    except HexaError as err:
        if ours:
            raw.unlink(missing_ok=True)
        if isinstance(err, CheckpointFormatError):
            raise CheckpointFormatError(
                f"{release.name}: {raw} could not be converted ({err.message}); nothing was written to the zoo"
                + (" and the download was deleted" if ours else ""),
                f"download it again (hexa zoo fetch {release.name}); {err.fix or ''}".rstrip("; ")) from None
        raise
    record_first_use(release, check.sha256)
    return folder


def release_card(release: Release, check) -> dict:
    """What `publish` writes on a release's model card and records in its config.json."""
    conversion = f"hexa_zoo.convert, {release.layout} layout"
    if release.convert_with:
        conversion = f"{release.convert_with}, then {conversion}"
    labels = "with its labels" if release.method == "Supervised" else "no labels"
    return {
        "description": f"ResNet-50 trunk of the {release.method} release ({release.epochs} epochs on ImageNet-1k, "
                       f"{labels}), as its authors publish it at {release.url}, converted exactly to timm's resnet50.",
        "license": release.license,
        "data": f"ImageNet-1k train ({labels}).",
        "metrics": {"imagenet_linear_top1 (published)": release.top1},
        "provenance": {
            "Release": f"{release.source}: {release.url}",
            "Paper": release.paper,
            "Conversion": conversion,
            "Download check": f"{check.kind}: {check.detail}",
            "Release file sha256": f"`{check.sha256}`",
            "Published checksum": release.checksum or "none",
            "Published ImageNet linear top-1": f"{release.top1} ({release.top1_source})",
            "Redistribution": release.redistribution or f"allowed by its license ({release.license})",
        },
        "release": {"name": release.name, "url": release.url, "check": check.kind, "file_sha256": check.sha256,
                    "checksum": release.checksum},
    }
