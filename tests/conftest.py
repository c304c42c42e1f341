"""Test setup: offline, CPU-only, every zoo in a temporary folder."""

import os

# Set before anything imports huggingface_hub, which reads these at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The embedded dataset is generated once per test session, into a temporary folder.
import tempfile  # noqa: E402

os.environ.setdefault("HEXA_DATA_HOME", tempfile.mkdtemp(prefix="hexa_data_"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_zoo(tmp_path_factory, monkeypatch):
    """Each test gets its own empty local zoo and HF cache; nothing touches ~/.cache."""
    root = tmp_path_factory.mktemp("zoo_env")
    monkeypatch.setenv("HEXA_ZOO_HOME", str(root / "zoo"))
    monkeypatch.setenv("HF_HOME", str(root / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield


@pytest.fixture(autouse=True)
def _cpu_unless_a_cuda_test(request, monkeypatch):
    """The suite is the CPU suite on a GPU machine too; only tests/test_cuda.py sees the GPU.

    Exactness tests (resume, DDP sync) are CPU statements, and subprocesses inherit the hidden device.
    """
    if request.node.path.name != "test_cuda.py":
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory):
    """A randomly initialised timm resnet18 trunk saved as safetensors (seeded, so the same every time)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "r18.safetensors"
    save_file(timm.create_model("resnet18", num_classes=0).state_dict(), path)
    return path


def write_image_folders(root, classes: int, per_split: dict, size: int = 36, seed: int = 0):
    """An ImageNet-style tree root/<split>/c<k>/<i>.png of random images, `per_split[split]` per class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in per_split.items():
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root
