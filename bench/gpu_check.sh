#!/usr/bin/env bash
# The GPU check (CI has no GPU): the CUDA tests, then the step benchmark in float32 and amp.
#
#     bash bench/gpu_check.sh [LOG_DIR]
#
# 1. tests/test_cuda.py: a HEXA step under fp16 autocast + channels_last against float32, the trainer on
#    CUDA (train, resume, publish), and `torchrun --nproc_per_node 1` on NCCL with DDP and SyncBN.
# 2. bench/pretrain_step.py with the ResNet-50 ImageNet recipes at 224 px: img/s per method, in float32 and
#    amp; the HEXA / baseline step-time ratios and what amp buys.
# 3. The rest of the suite on the GPU machine, one line per test (conftest hides the GPU from it, so it is
#    the CPU suite: a check that the machine's packages pass it too).
# Each part's output goes to LOG_DIR (default: bench/gpu_logs); the exit status is the CUDA tests'.
set -u
cd "$(dirname "$0")/.."
logs="${1:-bench/gpu_logs}"
mkdir -p "$logs"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python=${PYTHON:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$logs/gpu.txt"
"$python" -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
'timm', timm.__version__, 'cuda', torch.version.cuda, 'nccl', torch.cuda.nccl.version())" | tee -a "$logs/gpu.txt"

timeout 300 "$python" -m pytest -q -rA tests/test_cuda.py 2>&1 | tee "$logs/test_cuda.txt"
status=${PIPESTATUS[0]}

timeout 240 "$python" bench/pretrain_step.py --device cuda --recipes paper --size 224 --batch 64 --rounds 8 \
    2>&1 | tee "$logs/bench_cuda.txt"

timeout "${SUITE_TIMEOUT:-200}" "$python" -m pytest -v -p no:cacheprovider \
    --ignore tests/test_cuda.py 2>&1 | tee "$logs/suite_on_gpu.txt"
exit "$status"
