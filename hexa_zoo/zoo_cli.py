"""`hexa zoo`: list, inspect, fetch, convert, publish and mirror model weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

EXAMPLES = {
    "list": "  hexa zoo list\n  hexa zoo list --zoo /shared/hexa_zoo\n"
            "  hexa zoo list --releases                  # the field's published ResNet-50s: source, checksum, top-1",
    "info": "  hexa zoo info moco_v2_r50\n  hexa zoo info hexa_moco_r18.embedded",
    "fetch": "  hexa zoo fetch moco_v2_r50.in1k_ep800      # release: downloaded, checked, converted into the zoo\n"
             "  hexa zoo fetch byol_r50 --file pretrain_res50x1.pth.tar   # a file downloaded (converted) by hand\n"
             "  hexa zoo fetch hexa_moco_r50.in1k_ep800    # from the Hugging Face Hub",
    "convert": "  hexa zoo convert moco_v2_800ep_pretrain.pth.tar moco_v2_r50.safetensors\n"
               "  hexa zoo convert moco_v2_800ep_pretrain.pth.tar moco_r50_d2.pkl --to detectron2\n"
               "  hexa zoo convert swav_800ep_pretrain.pth.tar swav_tv.pth --from swav --to torchvision\n"
               "  hexa zoo convert runs/hexa_moco_r18/checkpoints/checkpoint_e00010_b0000000.pt trunk.safetensors "
               "--from hexa",
    "publish": "  hexa zoo publish runs/hexa_moco_r18/checkpoints/checkpoint_e00010_b0000000.pt --model hexa_moco_r18 "
               "--tag my_run\n"
               "  hexa zoo publish moco_v2_800ep_pretrain.pth.tar --model moco_v2_r50 --tag in1k_ep800\n"
               "  hexa zoo publish trunk.safetensors --model hexa_moco_r50 --tag in1k_ep200 "
               "--push-to-hub my-org/hexa_moco_r50.in1k_ep200",
    "mirror": "  hexa zoo mirror --org my-org --out hub/            # writes the folders, says what it would push\n"
              "  hexa zoo mirror --org my-org --out hub/ --published leaderboards/published.csv --push",
}


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="hexa zoo", formatter_class=fmt,
        description="The hexa-zoo model zoo: timm models whose weights live in the local zoo "
                    "($HEXA_ZOO_HOME, default ~/.cache/hexa_zoo), on the Hugging Face Hub, or at an official URL.",
        epilog="examples:\n" + "\n".join(EXAMPLES.values()))
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,info,fetch,convert,publish,mirror}")

    p = sub.add_parser("list", help="every registered model and tag, and where its weights are",
                       formatter_class=fmt, epilog="examples:\n" + EXAMPLES["list"])
    p.add_argument("--zoo", type=Path, help="local zoo folder (default: $HEXA_ZOO_HOME)")
    p.add_argument("--releases", action="store_true",
                   help="list the published releases: method, epochs, source, checksum status, published top-1")

    p = sub.add_parser("info", help="one model: its configuration, weight sources and model card",
                       formatter_class=fmt, epilog="examples:\n" + EXAMPLES["info"])
    p.add_argument("name", help="NAME or NAME.TAG")
    p.add_argument("--zoo", type=Path, help="local zoo folder (default: $HEXA_ZOO_HOME)")

    p = sub.add_parser("fetch", help="make a model's weights available offline (release URL, checked, or the Hub)",
                       formatter_class=fmt, epilog="examples:\n" + EXAMPLES["fetch"])
    p.add_argument("name", help="NAME or NAME.TAG")
    p.add_argument("--file", type=Path, help="a release file you downloaded (and, for SimCLR/BYOL, converted) "
                   "yourself: checked and converted into the zoo instead of downloading")

    p = sub.add_parser("convert", help="a MoCo/SwAV/DeepCluster-v2/hexa checkpoint -> timm, detectron2 or torchvision",
                       formatter_class=fmt, epilog="examples:\n" + EXAMPLES["convert"])
    p.add_argument("src", help="checkpoint file (.pth, .pth.tar, .pt, .safetensors)")
    p.add_argument("out", help="output file (written atomically)")
    p.add_argument("--from", dest="layout", default="auto", choices=["auto", "moco", "swav", "dcluster_v2", "hexa", "timm"],
                   help="checkpoint layout (default: detected from its keys)")
    p.add_argument("--to", default="timm", choices=["timm", "detectron2", "torchvision"],
                   help="timm: safetensors; detectron2: pickle for MODEL.WEIGHTS; torchvision: state dict")
    p.add_argument("--arch", help="timm architecture of the trunk (default: inferred)")

    p = sub.add_parser("publish", help="write a zoo folder (Hub layout) and optionally push it to the Hub",
                       formatter_class=fmt, epilog="examples:\n" + EXAMPLES["publish"])
    p.add_argument("weights", help="checkpoint, .safetensors file, zoo folder or official release URL")
    p.add_argument("--model", required=True, help="NAME or NAME.TAG: a registered name (loadable by name with "
                   "hexa_zoo imported) or your own (loadable with timm's local-dir:)")
    p.add_argument("--tag", help="tag (default: the model's default tag)")
    p.add_argument("--arch", help="timm architecture, for a name that is not registered (default: inferred)")
    p.add_argument("--zoo", type=Path, help="local zoo folder (default: $HEXA_ZOO_HOME)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing NAME.TAG folder (refused otherwise); the new card records what it replaced")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the folder to this Hub repository")
    p.add_argument("--description", help="model card description")
    p.add_argument("--license", help="license identifier for the model card")
    p.add_argument("--data", help="what the weights were trained on")
    p.add_argument("--recipe", type=Path, help="YAML file with the training recipe, for the model card")
    p.add_argument("--metric", action="append", default=[], metavar="NAME=VALUE", help="a known metric (repeatable)")

    p = sub.add_parser("mirror", help="the releases in the local zoo as Hub repository folders (pushed with --push)",
                       formatter_class=fmt, epilog="examples:\n" + EXAMPLES["mirror"])
    p.add_argument("--org", required=True, help="Hub organisation (or user) the repositories go to: ORG/NAME.TAG")
    p.add_argument("--out", required=True, type=Path, help="folder to write one Hub folder per release into")
    p.add_argument("--published", type=Path, help="CSV of published numbers in leaderboards/published.csv's columns, "
                   "for each card's model-index (default: the release's own ImageNet top-1)")
    p.add_argument("--push", action="store_true", help="upload each folder (huggingface_hub; needs a login)")
    p.add_argument("--zoo", type=Path, help="local zoo folder (default: $HEXA_ZOO_HOME)")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    commands = {"list": _list, "info": _info, "fetch": _fetch, "convert": _convert, "publish": _publish,
                "mirror": _mirror}
    return commands[args.command](args)


def where_are_weights(name: str, tag: str, url: str | None, zoo: Path | None = None) -> str:
    """Where `name.tag`'s weights are now, without touching the network."""
    from .weights import WEIGHTS_FILE, hub_cached_file, hub_repo_id, official_download_path, zoo_folder

    folder = zoo_folder(name, tag, zoo)
    if (folder / WEIGHTS_FILE).is_file():
        return f"local zoo: {folder}"
    if hub_cached_file(hub_repo_id(name, tag)):
        return f"cached from the Hub: {hub_repo_id(name, tag)}"
    if url and official_download_path(url).is_file():
        return f"official release, downloaded: {official_download_path(url)}"
    if url:
        return "official release URL (fetched and converted on first use online)"
    return f"not yet available (Hub: {hub_repo_id(name, tag)})"


def _rows(zoo: Path | None):
    from timm.models import get_arch_pretrained_cfgs, get_pretrained_cfg

    from .releases import ZOO_MODELS
    from .weights import WEIGHTS_FILE, local_tags, zoo_home

    for name, arch in ZOO_MODELS.items():
        default = get_pretrained_cfg(name).tag
        cfgs = get_arch_pretrained_cfgs(name)
        tags = [cfg.tag for cfg in cfgs.values()]
        for tag in tags:
            yield f"{name}.{tag}", arch, tag == default, where_are_weights(name, tag, cfgs[f"{name}.{tag}"].url, zoo)
        for tag in local_tags(name, zoo):
            if tag not in tags:
                yield f"{name}.{tag}", arch, False, where_are_weights(name, tag, None, zoo)
    root = Path(zoo or zoo_home())
    for folder in sorted(root.iterdir()) if root.is_dir() else ():
        if folder.name.split(".", 1)[0] not in ZOO_MODELS and (folder / WEIGHTS_FILE).is_file():
            arch = json.loads((folder / "config.json").read_text()).get("architecture", "?")
            yield folder.name, arch, False, f"local zoo: {folder} (unregistered name: hexa_zoo.load_trunk(PATH))"


def _registered(spec: str) -> tuple[str, str]:
    from .errors import ConfigError
    from .publish import split_name
    from .releases import ZOO_MODELS

    if spec.split(".", 1)[0] not in ZOO_MODELS:
        raise ConfigError(f"{spec!r} is not a registered hexa-zoo model",
                          f"use one of {', '.join(ZOO_MODELS)} (a zoo folder loads with hexa_zoo.load_trunk(PATH))")
    return split_name(spec)


def _list(args) -> int:
    if args.releases:
        return _list_releases(args.zoo)
    rows = list(_rows(args.zoo))
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'MODEL.TAG':<{width}}{'ARCH':<10}WEIGHTS    (* = default tag)")
    for name, arch, default, where in rows:
        print(f"{name + (' *' if default else ''):<{width}}{arch:<10}{where}")
    return 0


def _info(args) -> int:
    from timm.models import get_arch_pretrained_cfgs

    from .catalog import MODELS
    from .loading import resolve_cfg
    from .releases import RELEASES, ZOO_MODELS, model_tags
    from .weights import hub_repo_id, zoo_folder

    name, tag = _registered(args.name)
    cfg = resolve_cfg(name, tag)
    arch = ZOO_MODELS[name]
    method = MODELS[name][0] if name in MODELS else f"{RELEASES[f'{name}.{model_tags(name)[0]}'].method} (a release only)"
    print(f"{name}.{tag}: timm {arch} trunk, method {method}")
    print(f"  tags: {', '.join(c.tag for c in get_arch_pretrained_cfgs(name).values())}")
    for key in ("description", "license", "paper_name", "paper_ids", "origin_url", "input_size", "mean", "std",
                "crop_pct", "interpolation", "notes"):
        if getattr(cfg, key, None):
            print(f"  {key}: {getattr(cfg, key)}")
    print("  weight sources, in order:")
    folder = zoo_folder(name, tag, args.zoo)
    print(f"    local zoo:        {folder}")
    print(f"    Hugging Face Hub: {hub_repo_id(name, tag)}")
    print(f"    official release: {cfg.url or 'none'}")
    print(f"  weights now: {where_are_weights(name, tag, cfg.url, args.zoo)}")
    readme = folder / "README.md"
    print("\n" + (readme.read_text(encoding="utf-8") if readme.is_file()
                  else f"(no model card yet: it comes with the weights; see `hexa zoo fetch {name}.{tag}`)"))
    return 0


def _fetch(args) -> int:
    from .errors import ConfigError
    from .loading import fetch_release, find_weights, resolve_cfg
    from .publish import recorded_about
    from .releases import RELEASES
    from .weights import WEIGHTS_FILE, zoo_folder

    name, tag = _registered(args.name)
    release = RELEASES.get(f"{name}.{tag}")
    if release:
        already = (zoo_folder(name, tag) / WEIGHTS_FILE).is_file() and args.file is None
        folder = fetch_release(release, args.file)
        check = (recorded_about(folder).get("release") or {}).get("check", "published by hand, not checked")
        print(f"{release.name}: {'already in' if already else 'checked, converted and cached in'} the zoo: {folder} "
              f"(download check: {check}; card: {folder / 'README.md'})")
        return 0
    if args.file:
        raise ConfigError(f"{name}.{tag} is not a release, so --file has no checksum to be checked against",
                          f"publish the file instead: hexa zoo publish {args.file} --model {name} --tag {tag}")
    cfg = resolve_cfg(name, tag)
    print(f"{name}.{tag}: weights available ({find_weights(name, tag, cfg.url)})")
    return 0


def _convert(args) -> int:
    from .convert import convert
    from .fileio import sha256_file

    converted = convert(args.src, args.out, layout=args.layout, to=args.to, arch=args.arch)
    print(converted.summary())
    print(f"wrote {args.out} ({args.to}; sha256 {sha256_file(args.out)})")
    if args.to == "timm":
        print(f"load it: timm.create_model('{converted.arch}', pretrained=True, "
              f"pretrained_cfg_overlay=dict(file='{args.out}', num_classes=0))")
    elif args.to == "detectron2":
        print(f"use it: MODEL.WEIGHTS {args.out} (RGB input, torchvision mean/std, as in MoCo's detection configs)")
    return 0


def load_line(folder: Path, zoo: Path | None = None) -> str:
    """How to load a published folder: by name where the name is registered, always by `local-dir:`."""
    from .releases import ZOO_MODELS

    by_folder = f"timm.create_model('local-dir:{folder}', pretrained=True)"
    if folder.name.split(".", 1)[0] not in ZOO_MODELS:  # timm cannot resolve an unregistered name
        return f"{by_folder} (or hexa_zoo.load_trunk('{folder}'))"
    zoo_note = f" and HEXA_ZOO_HOME={zoo}" if zoo else ""
    return f"timm.create_model('{folder.name}', pretrained=True) with hexa_zoo imported{zoo_note}, or {by_folder}"


def _publish(args) -> int:
    from .errors import ConfigError
    from .publish import publish

    card = {k: getattr(args, k) for k in ("description", "license", "data") if getattr(args, k)}
    if args.recipe:
        card["recipe"] = yaml.safe_load(args.recipe.read_text())
    metrics = {}
    for pair in args.metric:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--metric {pair!r} is not NAME=VALUE", "write it like --metric knn_top1=61.2")
        metrics[key] = yaml.safe_load(value)
    if metrics:
        card["metrics"] = metrics
    folder = publish(args.weights, args.model, tag=args.tag, zoo=args.zoo, card=card, push_to_hub=args.push_to_hub,
                     arch=args.arch, overwrite=args.overwrite)
    print(f"published {folder}")
    print(f"load it: {load_line(folder, args.zoo)}")
    if args.push_to_hub:
        print(f"pushed to the Hub: {args.push_to_hub}")
    return 0


def _list_releases(zoo: Path | None) -> int:
    from .publish import recorded_about
    from .release_files import recorded_first_use
    from .releases import RELEASES
    from .weights import WEIGHTS_FILE, zoo_folder

    rows = []
    for r in RELEASES.values():
        if r.checksum:
            check = f"published {r.checksum}"
        else:
            first = recorded_first_use(r)
            check = f"none published; first use {first['sha256'][:12]}" if first else "none published (TOFU)"
        folder = zoo_folder(r.model, r.tag, zoo)
        held = "yes" if (folder / WEIGHTS_FILE).is_file() else ("by hand" if r.convert_with else "-")
        if held == "yes" and not recorded_about(folder).get("release"):
            held = "yes (unchecked)"
        rows.append((r.name, r.method, str(r.epochs), f"{r.top1:.1f}", check, "yes" if r.trainable else "no",
                     held, r.license, r.source))
    head = ("MODEL.TAG", "METHOD", "EPOCHS", "TOP-1", "CHECKSUM", "TRAIN", "IN ZOO", "LICENSE", "SOURCE")
    widths = [max(len(row[i]) for row in [head, *rows]) + 2 for i in range(len(head) - 1)]
    for row in [head, *rows]:
        print("".join(f"{cell:<{w}}" for cell, w in zip(row, widths)) + row[-1])
    print(f"\n{len(RELEASES)} releases of {len({r.method for r in RELEASES.values()})} methods; TOP-1: published "
          "ImageNet linear top-1; TRAIN: hexa pretrain can train the method too; fetch one: hexa zoo fetch MODEL.TAG")
    return 0


def _mirror(args) -> int:
    from .mirror import mirror, published_rows

    rows = published_rows(args.published) if args.published else []
    done = mirror(args.org, args.out, published=rows, push=args.push, zoo=args.zoo)
    if not done:
        print("the local zoo holds no release: fetch some first (hexa zoo list --releases; hexa zoo fetch MODEL.TAG)")
    for m in done:
        if m.skipped:
            print(f"left out {m.release.name}: {m.skipped}")
        elif args.push:
            print(f"pushed {m.folder} -> https://huggingface.co/{m.repo_id}")
        else:
            print(f"wrote {m.folder}; would push it to {m.repo_id} (run again with --push)")
    return 0
