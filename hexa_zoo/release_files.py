"""Release files: downloaded once, and checked before anything is converted from them.

A release (`hexa_zoo.releases`) whose authors publish a checksum is checked against it: MoCo's README gives the
first 8 hex digits of each file's md5 ("md5:a04e12f8"), torchvision's file names the first 8 of its sha256
("sha256:0676ba61"). Where none is published, the sha256 of the first file accepted is recorded in the zoo
(`$HEXA_ZOO_HOME/downloads/first-use-sha256.json`, and on the model card), and a later file that differs is
refused: trust on first use. The record outlives the zoo folder, so deleting a model and fetching it again is
checked against the first download too.

Downloads go to `$HEXA_ZOO_HOME/downloads/<file name>` atomically, checked before they land there: a truncated or
altered download leaves nothing behind.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import IntegrityError, OfflineError
from .fileio import atomic_path, atomic_write_json
from .releases import Release, release_by_url
from .weights import is_offline, official_download_path, zoo_home

TRUST_FILE = "first-use-sha256.json"


@dataclass(frozen=True)
class FileCheck:
    """What was checked about a release file, for its model card."""

    kind: str    # "published md5", "published sha256" or "sha256 recorded at first download"
    sha256: str  # the file's full sha256
    detail: str  # one sentence saying what matched what


def file_digests(path: Path) -> dict[str, str]:
    """md5 and sha256 of a file, read once in chunks (release files are ~100-800 MB)."""
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            md5.update(chunk)
            sha256.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def trust_file() -> Path:
    return zoo_home() / "downloads" / TRUST_FILE


def _records() -> dict:
    try:
        records = json.loads(trust_file().read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise IntegrityError(f"the first-use checksum record {trust_file()} is unreadable ({err})",
                             "restore it from a backup; deleting it trusts the next download of every release anew")
    return records if isinstance(records, dict) else {}


def recorded_first_use(release: Release) -> dict | None:
    """`{"sha256", "recorded", "model"}` recorded for the release's URL, or None before its first download."""
    found = _records().get(release.url)
    return found if isinstance(found, dict) and found.get("sha256") else None


def record_first_use(release: Release, sha256: str) -> dict:
    """Record `sha256` as the release file's first-use checksum (kept if one is recorded already)."""
    records = _records()
    if not isinstance(records.get(release.url), dict):
        records[release.url] = {"sha256": sha256, "model": release.name,
                                "recorded": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}
        atomic_write_json(trust_file(), records)
    return records[release.url]


def check_file(path: Path, release: Release) -> FileCheck:
    """Check a release file against its published checksum, else against the first-use record (a file with no
    record yet passes; `record_first_use` records it once it converted). IntegrityError names both digests."""
    digests = file_digests(path)
    sha256 = digests["sha256"]
    if release.checksum:
        algo, _, expected = release.checksum.partition(":")
        if not digests[algo].startswith(expected.lower()):
            raise IntegrityError(
                f"{path} is not {release.name}'s release file: its {algo} is {digests[algo]}, the authors publish "
                f"{expected}... for {release.url} (a truncated or altered download)",
                f"download it again; if it keeps differing, the file at {release.url} changed: tell the project")
        return FileCheck(f"published {algo}", sha256,
                         f"{algo} {digests[algo][:len(expected)]} matches the {algo} prefix {release.source.split()[0]} "
                         f"publishes for this file")
    record = recorded_first_use(release)
    if record is None:
        return FileCheck("sha256 recorded at first download", sha256,
                         "no checksum is published for this file: its sha256 is recorded now, at first download, "
                         "and a later download that differs is refused")
    if record["sha256"] != sha256:
        raise IntegrityError(
            f"{path} differs from the {release.name} file first downloaded on {record.get('recorded', '?')}: sha256 "
            f"{sha256}, recorded {record['sha256']} (the authors publish no checksum, so the first download is the "
            f"reference)",
            f"download it again; if the file at {release.url} really changed, remove its entry from {trust_file()} "
            "to trust the new one")
    return FileCheck("sha256 recorded at first download", sha256,
                     f"sha256 matches the one recorded at the first download ({record.get('recorded', '?')}); "
                     "the authors publish no checksum")


def by_hand(release: Release) -> str:
    """What to do with a release file downloaded (and, for TF / JAX originals, converted) by hand."""
    got = (f"download {release.url}, convert it with {release.convert_with}" if release.convert_with
           else f"download {release.url} by hand")
    return (f"{got}, then: hexa zoo fetch {release.name} --file PATH (checks, converts and caches it in the zoo), "
            f"or convert it alone: hexa zoo convert PATH {release.model}.safetensors --from {release.layout}")


def download_official(url: str) -> Path:
    """A release file in `$HEXA_ZOO_HOME/downloads/`, downloaded once and checked (`check_file`) before it lands
    there. Offline this fails at once, naming the URL and what to do with a file downloaded by hand."""
    release = release_by_url(url)
    if is_offline():
        raise OfflineError(f"cannot download {url}: offline (HF_HUB_OFFLINE/HEXA_ZOO_OFFLINE is set)",
                           by_hand(release) if release else "unset HF_HUB_OFFLINE, or download the file elsewhere "
                                                            "and pass its path")
    from torch.hub import download_url_to_file

    dest = official_download_path(url)
    with atomic_path(dest) as tmp:
        download_url_to_file(url, str(tmp), progress=True)
        if release:
            check_file(tmp, release)
    return dest
