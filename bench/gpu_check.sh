#!/usr/bin/env bash
# The GPU check (CI has no GPU): the CUDA tests, the two benchmarks at the paper recipes and an
# end-to-end training throughput through the gpu augmentation path; about 8 minutes in all.
#
#     bash bench/gpu_check.sh [LOG_DIR]
#
# 1. tests/test_cuda.py: a HEXA step under fp16 autocast + channels_last against float32, the trainer on
#    CUDA (train, resume, publish, the gpu augmentation path against its CPU run), and
#    `torchrun --nproc_per_node 1` on NCCL with DDP and SyncBN.
# 2. bench/pretrain_step.py: the ResNet-50 ImageNet recipes at 224 px, batch 256, amp + channels_last:
#    img/s per method and each one's `<method>_amp_vs_ideal` against the supervised reference step.
# 3. bench/data_pipeline.py: per-core images/s of ours against MoCo's and swav's official pipelines,
#    and the device side of the gpu path on a batch of 256.
# 4. bench/train_throughput.py: MoCo-v2 ResNet-50 trained on the benchmark's 500x375 JPEGs through the
#    gpu path with 16 workers, batch 256; its img/s over step 2's random-tensor rate (goal >= 0.9).
# Each part's output goes to LOG_DIR (default: bench/gpu_logs), one JSON line per benchmark last in its
# log and together in LOG_DIR/summary.jsonl; the exit status is the CUDA tests'.
set -u
cd "$(dirname "$0")/.."
logs="${1:-bench/gpu_logs}"
mkdir -p "$logs"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}
: > "$logs/summary.jsonl"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$logs/gpu.txt"
"$python" -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
'timm', timm.__version__, 'cuda', torch.version.cuda, 'nccl', torch.cuda.nccl.version())" | tee -a "$logs/gpu.txt"

timeout 150 "$python" -m pytest -q -rA tests/test_cuda.py 2>&1 | tee "$logs/test_cuda.txt"
status=${PIPESTATUS[0]}

timeout 100 "$python" bench/pretrain_step.py --device cuda --recipes paper --size 224 --batch 256 --rounds 5 \
    --precision amp 2>&1 | tee "$logs/bench_step.txt"
tail -n 1 "$logs/bench_step.txt" >> "$logs/summary.jsonl"

timeout 60 "$python" bench/data_pipeline.py --images 48 --rounds 3 --device cuda --device-batch 256 \
    2>&1 | tee "$logs/bench_data.txt"
tail -n 1 "$logs/bench_data.txt" >> "$logs/summary.jsonl"

# The random-tensor rate of MoCo-v2 under amp, from step 2, is the end-to-end run's yardstick.
rate=$("$python" -c "import json, sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])['img_per_s']['moco_v2_amp'])" \
    "$logs/bench_step.txt" 2>/dev/null || echo 0)
images="$logs/jpegs"
timeout 45 "$python" bench/data_pipeline.py --write-images "$images" --images 2048 | tee "$logs/write_jpegs.txt"
timeout 110 "$python" bench/train_throughput.py --data "$images" --recipe moco_v2_r50_200ep --batch 256 \
    --workers 16 --steps 24 --step-rate "$rate" 2>&1 | tee "$logs/bench_train.txt"
tail -n 1 "$logs/bench_train.txt" >> "$logs/summary.jsonl"
rm -rf "$images"
exit "$status"
