"""N-way K-shot episodes on frozen features from classes the model never saw.

Each episode draws N classes, then K support and Q query images per class (without replacement), and
classifies the N*Q queries from the N*K supports on L2-normalised frozen features, two ways:
- `logreg`: multinomial logistic regression (scikit-learn, L2, C = 1, lbfgs), as in RFS (Tian et al. 2020);
- `centroid`: the nearest class mean by Euclidean distance (SimpleShot's CL2N, Wang et al. 2019).
Defaults: 5-way 1-shot and 5-shot, 15 queries per class, 600 episodes. Reported: mean accuracy over
episodes (percent) with the 95% confidence interval 1.96 * std / sqrt(episodes) (std with n - 1).

Data: the embedded dataset's `fewshot/` folder (held-out classes), or a path to an ImageFolder tree
of held-out classes (`<class>/<image>`). Metric names: `acc_5w1s_logreg`, `acc_5w5s_centroid`, ...

Cross-domain few-shot (`--preset cdfsl`, ssl-transfer's `few_shot.py` on CD-FSL): `--data` is one of
CropDiseases, EuroSAT, ISIC or ChestX in its released layout (`transfer/readers/cdfsl.py`); 5-way 5-, 20- and
50-shot, 15 queries, 600 episodes; prototypes (class means) of unnormalised features, squared Euclidean
distance; Resize((257, 257)) + CenterCrop(224) (CD-FSL's `Scale` of 1.15 x 224); the interval
1.96 * std / sqrt(600) with the population std. `cdfsl_embedded` runs the same on the embedded held-out
shapes.

    hexa transfer fewshot --model hexa_moco_r18.embedded --data embedded --out results/
    hexa transfer fewshot --model moco_v2_r50 --preset cdfsl --data /data/EuroSAT --out results/
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from hexa_zoo.errors import DataError
from hexa_zoo.records import metric

from ..readers.cdfsl import read_cdfsl
from ..common import benchmark_name
from ..readers.images import read_image_split
from ..runner import ProtocolRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FewShotConfig:
    ways: int = 5
    shots: tuple[int, ...] = (1, 5)
    queries: int = 15
    episodes: int = 600
    classifiers: tuple[Literal["logreg", "centroid"], ...] = ("logreg", "centroid")
    logreg_c: float = 1.0
    logreg_max_iter: int = 1000
    max_per_class: int = 0     # > 0: only the first N images of each class (quick runs)
    resize: int = 256
    crop: int = 224
    square_resize: bool = False  # Resize((resize, resize)) instead of the shorter side
    normalize: bool = True       # L2-normalise features (RFS, SimpleShot); ssl-transfer's ProtoNet does not
    ci_ddof: int = 1             # the std in the 95% interval: 1 sample, 0 population (ssl-transfer)
    data_layout: Literal["folders", "cdfsl"] = "folders"
    batch_size: int = 128
    device: str = ""


_CDFSL = dict(shots=(5, 20, 50), classifiers=("centroid",), normalize=False, ci_ddof=0, resize=257, crop=224,
              square_resize=True, data_layout="cdfsl")
PRESETS: dict[str, FewShotConfig] = {
    "paper": FewShotConfig(),
    "embedded": FewShotConfig(resize=64, crop=64, batch_size=100),
    "cdfsl": FewShotConfig(**_CDFSL),
    # The held-out shapes have 40 images a class: 5 and 20 shots (+ 15 queries), 100 episodes, 64 px.
    "cdfsl_embedded": FewShotConfig(**{**_CDFSL, "shots": (5, 20), "episodes": 100, "resize": 73, "crop": 64,
                                       "data_layout": "folders", "batch_size": 100}),
}


def embedded_sizes(share: float) -> dict:
    """The embedded preset's settings at `share` (0-1) of its full size: fewer episodes (at least 20)."""
    return {"episodes": max(20, round(600 * share))}


@dataclass(frozen=True)
class Episode:
    support: np.ndarray        # indices into the feature set, (ways * shots,)
    support_labels: np.ndarray  # 0 .. ways-1
    query: np.ndarray          # (ways * queries,)
    query_labels: np.ndarray
    classes: np.ndarray        # the original labels of the episode's classes


def sample_episode(labels: np.ndarray, ways: int, shots: int, queries: int, rng: np.random.Generator) -> Episode:
    """One episode: `ways` classes among those with at least shots + queries images, then disjoint
    support and query images of each (labels renumbered 0 .. ways-1 in the order drawn)."""
    counts = np.bincount(labels)
    eligible = np.flatnonzero(counts >= shots + queries)
    if len(eligible) < ways:
        raise DataError(f"a {ways}-way {shots}-shot episode with {queries} queries needs {ways} classes with at "
                        f"least {shots + queries} images; only {len(eligible)} have that many",
                        "use fewer ways/queries (--set ways=... queries=...) or more held-out images")
    classes = rng.choice(eligible, ways, replace=False)
    support, query = [], []
    for cls in classes:
        picked = rng.choice(np.flatnonzero(labels == cls), shots + queries, replace=False)
        support.append(picked[:shots])
        query.append(picked[shots:])
    return Episode(np.concatenate(support), np.repeat(np.arange(ways), shots), np.concatenate(query),
                   np.repeat(np.arange(ways), queries), classes)


def confidence95(values: Sequence[float], ddof: int = 1) -> float:
    """Half-width of the 95% confidence interval of the mean: 1.96 * std / sqrt(n), the std with `ddof`."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return 0.0
    return float(1.96 * values.std(ddof=ddof) / math.sqrt(len(values)))


def classify_episode(feats: np.ndarray, ep: Episode, classifier: str, cfg: FewShotConfig) -> float:
    """Query accuracy (percent) of one episode on `feats` (already L2-normalised when the config says so)."""
    xs, xq = feats[ep.support], feats[ep.query]
    if classifier == "centroid":
        centroids = np.stack([xs[ep.support_labels == c].mean(axis=0) for c in range(len(ep.classes))])
        dist = ((xq[:, None, :] - centroids[None]) ** 2).sum(-1)
        pred = dist.argmin(axis=1)
    elif classifier == "logreg":
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=cfg.logreg_c, max_iter=cfg.logreg_max_iter)
        pred = clf.fit(xs, ep.support_labels).predict(xq)
    else:
        raise ValueError(f"unknown few-shot classifier {classifier!r}")
    return 100.0 * float((pred == ep.query_labels).mean())


def fewshot_eval(feats: np.ndarray, labels: np.ndarray, cfg: FewShotConfig, seed: int = 0) -> dict[str, list[float]]:
    """Per-episode accuracies for every (shots, classifier): {"acc_5w1s_logreg": [...], ...}.

    Every classifier sees the same episodes; episodes of each shot count come from their own seeded stream.
    """
    feats = np.asarray(feats, dtype=np.float64)
    if cfg.normalize:
        feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    out: dict[str, list[float]] = {}
    for shots in cfg.shots:
        rng = np.random.default_rng([seed, shots])
        episodes = [sample_episode(labels, cfg.ways, shots, cfg.queries, rng) for _ in range(cfg.episodes)]
        for classifier in cfg.classifiers:
            out[f"acc_{cfg.ways}w{shots}s_{classifier}"] = [classify_episode(feats, ep, classifier, cfg)
                                                           for ep in episodes]
    return out


def run(model: str, data: str, out: str | Path, *, preset: str = "embedded", overrides: Sequence[str] = (),
        seed: int = 0) -> dict:
    """Few-shot episodes of `model`'s frozen features on held-out classes."""
    run = ProtocolRun.start("fewshot", FewShotConfig, PRESETS, model, data, preset=preset, overrides=overrides,
                            seed=seed)
    cfg = run.cfg
    root = run.root
    if cfg.data_layout == "cdfsl":
        name, images = read_cdfsl(root)
        protocol_name = "cdfsl"
    else:
        folder = root / "fewshot" if str(data) == "embedded" else root
        images = read_image_split(folder.parent, folder.name, max_per_class=cfg.max_per_class)
        name, protocol_name = None, "cdfsl" if preset.startswith("cdfsl") else "fewshot"
    run.use_data(root, images.paths, images=len(images.paths), classes=images.classes)
    tf = run.transform(cfg.resize, cfg.crop, square=cfg.square_resize)
    feats = run.features(images.paths, tf, desc="fewshot")
    per_episode = fewshot_eval(feats.numpy(), images.labels, cfg, seed)
    metrics = {}
    for metric_name, values in per_episode.items():
        metrics[metric_name] = metric(values)
        metrics[metric_name]["ci95"] = confidence95(values, cfg.ci_ddof)
    log.info("fewshot: %s", ", ".join(f"{n}={m['mean']:.2f}±{m['ci95']:.2f}" for n, m in metrics.items()))
    notes = [f"features {'L2-normalised' if cfg.normalize else 'unnormalised'}; 95% interval with the "
             f"{'population' if cfg.ci_ddof == 0 else 'sample'} std over {cfg.episodes} episodes"]
    return run.finish(benchmark_name(name or run.dataset["name"], protocol_name), out, metrics, notes=notes)
