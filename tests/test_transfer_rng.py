"""The same seed gives the same numbers, whatever the feature cache held and whatever drew from the global RNGs
before: every protocol draws from streams seeded by its own seed and purpose (transfer/randomness.py)."""


import numpy as np
import pytest
import torch

from conftest import write_image_folders
from transfer.protocols import fewshot, knn, linear, lowshot_svm, semisup
from transfer.randomness import EpochSampler, SeededItems, stream_seed

TINY = ["resize=32", "crop=32"]

PROTOCOLS = {
    "knn": (knn, "embedded", TINY + ["max_per_class=10"]),
    "linear_sgd": (linear, "embedded", TINY + ["train_crop=32", "epochs=2", "milestones=[1]", "max_per_class=8"]),
    "linear_fast": (linear, "embedded_fast", TINY + ["max_per_class=8", "fast_weight_decays=[0.01,0.0001]",
                                                     "fast_max_iter=20"]),
    "fewshot": (fewshot, "embedded", TINY + ["episodes=10", "max_per_class=20"]),
    "lowshot_svm": (lowshot_svm, "embedded", TINY + ["ks=[1,2]", "num_samples=2", "costs=[0.1,1.0]"]),
}


def _metrics(record):
    return {name: m["values"] for name, m in record["metrics"].items()}


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_cold_and_warm_feature_cache_give_the_same_numbers(name, r18_file, tmp_path, monkeypatch):
    module, preset, sets = PROTOCOLS[name]
    monkeypatch.setenv("HEXA_FEATURE_CACHE", str(tmp_path / "cache"))
    cold = module.run(str(r18_file), "embedded", tmp_path / "a", preset=preset, overrides=sets, seed=3)
    assert any((tmp_path / "cache").iterdir())  # the first run filled the cache ...
    torch.rand(17), np.random.rand(5)           # ... and whatever else draws from the global RNGs in between
    warm = module.run(str(r18_file), "embedded", tmp_path / "b", preset=preset, overrides=sets, seed=3)
    assert _metrics(warm) == _metrics(cold)


def test_linear_sgd_does_not_depend_on_loader_workers(r18_file, tmp_path, monkeypatch):
    module, preset, sets = PROTOCOLS["linear_sgd"]
    monkeypatch.setenv("HEXA_FEATURE_CACHE", str(tmp_path / "cache"))
    runs = [module.run(str(r18_file), "embedded", tmp_path / str(w), preset=preset, seed=1,
                       overrides=sets + [f"num_workers={w}"]) for w in (0, 2)]
    assert _metrics(runs[0]) == _metrics(runs[1])


def test_semisup_does_not_depend_on_workers_or_the_global_rng(r18_file, tmp_path):
    write_image_folders(tmp_path / "data", 4, {"train": 10, "val": 2}, size=40)
    sets = ["labels=10percent", "epochs=2", "decay_epochs=[1]", "image_size=32", "resize_size=36", "batch_size=2"]
    data = str(tmp_path / "data")
    a = semisup.run(str(r18_file), data, tmp_path / "a", overrides=sets + ["workers=0"], seed=2)
    torch.rand(17)
    b = semisup.run(str(r18_file), data, tmp_path / "b", overrides=sets + ["workers=2"], seed=2)
    assert _metrics(a) == _metrics(b)


def test_streams_are_seeded_by_seed_and_purpose_and_epochs_differ():
    assert stream_seed(0, "a") == stream_seed(0, "a") != stream_seed(0, "b") != stream_seed(1, "a")
    sampler = EpochSampler(10, 0, "order")
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == list(range(10)) and sorted(second) == list(range(10, 20))
    assert [i - 10 for i in second] != first

    class Noise(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(1).item()

    items = SeededItems(Noise(), 0, "noise")
    torch.manual_seed(123)
    once = [items[i] for i in range(8)]
    torch.manual_seed(456)
    assert [items[i] for i in reversed(range(8))] == once[::-1]  # neither the global RNG nor the order matter
    assert once[:4] != once[4:]  # epoch 1 draws new augmentations
    # Two processes of a torchrun share every epoch without overlap, as DistributedSampler(drop_last=True).
    ranks = [list(EpochSampler(10, 0, "order", rank=r, world=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 5 and not set(ranks[0]) & set(ranks[1])
