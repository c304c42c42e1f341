#!/usr/bin/env bash
# The GPU check (CI has no GPU): the CUDA tests and the figures issue 19 asks for, as JSON lines; about
# 7 minutes in all on one H200 (each part has its own timeout; their sum is 480 s, plus the wheels; the split
# among parts is an estimate, not yet measured on a GPU).
#
#     bash bench/gpu_check.sh [LOG_DIR]              # on a GPU host
#     DRY_RUN=1 bash bench/gpu_check.sh [LOG_DIR]    # anywhere: every bench's --help parses; prints the plan
#
# A bare GPU image (torch, torchvision, timm) lacks simplejpeg and pycocotools: put their wheels in .whl/
# (or WHEELS=DIR) and they are installed into /tmp/gpu_check_site first.
#
# 1. tests/test_cuda.py: a HEXA step under fp16 autocast + channels_last against float32, the trainer on
#    CUDA (train, resume, publish, the gpu augmentation path against its CPU run, auto's trial and decision),
#    and `torchrun --nproc_per_node 1` on NCCL with DDP and SyncBN. Goal: all pass (the exit status).
# 2. bench/pretrain_step.py: the ResNet-50 ImageNet recipes at 224 px, batch 256, amp + channels_last:
#    img/s per method and each one's `<method>_amp_vs_ideal` against the supervised step (goal <= 1.10);
#    then MoCo-v2 and HEXA_MoCo with fp16 and bf16 autocast (`bf16_over_fp16_speed` > 1: amp_dtype=bfloat16
#    pays, a default for a GPU session to decide); then MoCo-v2 eager against its trunks under torch.compile
#    (`--compile`: the recipes' compile=true, inductor's default mode; `compiled_over_eager_speed` > 1 and
#    `compiled_first_loss_rel_diff` <= 1e-4 would make it a default to consider; inductor's compile of a
#    ResNet-50 takes most of the part's 60 s: a timeout there is a figure too).
# 3. bench/data_pipeline.py --device-only: the gpu path's device side at batch 256 (two 224-px views),
#    against the implementation before issue 19 in the same run (goal >= 25k img/s).
# 4. bench/train_throughput.py: MoCo-v2 ResNet-50 on 2048 500x375 JPEGs, 16 workers, batch 256, with the
#    default augment.pipeline=auto (its trial's choice and both figures in `auto_trial`) and with cpu;
#    img/s over step 2's random-tensor rate (goal >= 0.95 with the default), and `augment_ms`.
# 5. bench/linear_epoch.py: the linear protocol's epoch time (main_lincls, preset paper: ResNet-50 frozen,
#    224 px crops, batch 256) over the same 2048 JPEGs, with its loader against the trunk's bare forward,
#    and scaled to an ImageNet epoch.
# 6. bench/features.py --device cuda: the feature extractor against a bare forward (goal >= 0.9x) and from
#    image files with the default loader workers (goal >= 0.8x).
# Each part's output goes to LOG_DIR (default: bench/gpu_logs), its JSON line last in its log and all of
# them in LOG_DIR/summary.jsonl; the exit status is the CUDA tests'.
set -u
cd "$(dirname "$0")/.."
logs="${1:-bench/gpu_logs}"
mkdir -p "$logs"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}
dry=${DRY_RUN:-0}
: > "$logs/summary.jsonl"

wheels=${WHEELS:-.whl}
if [ "$dry" = 0 ] && compgen -G "$wheels/*.whl" > /dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/gpu_check_site "$wheels"/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/gpu_check_site"
fi

# part NAME SECONDS COMMAND...: run it under a timeout into LOG_DIR/NAME.txt; its last line to the summary.
part() {
    local name=$1 seconds=$2
    shift 2
    if [ "$dry" != 0 ]; then
        echo "[dry run] timeout $seconds $*"
        return 0
    fi
    timeout "$seconds" "$@" 2>&1 | tee "$logs/$name.txt"
    local rc=${PIPESTATUS[0]}
    tail -n 1 "$logs/$name.txt" | grep '^{' >> "$logs/summary.jsonl"
    return "$rc"
}

if [ "$dry" != 0 ]; then
    for bench in pretrain_step data_pipeline train_throughput linear_epoch features; do
        "$python" "bench/$bench.py" --help > /dev/null || { echo "bench/$bench.py --help failed"; exit 1; }
    done
    echo "[dry run] every bench parses its arguments"
else
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$logs/gpu.txt"
    "$python" -c "import torch, torchvision, timm, sys; print('python', sys.version.split()[0], 'torch', torch.__version__,
'torchvision', torchvision.__version__, 'timm', timm.__version__, 'cuda', torch.version.cuda,
'nccl', torch.cuda.nccl.version())" | tee -a "$logs/gpu.txt"
fi

part test_cuda 155 "$python" -m pytest -q -rA tests/test_cuda.py
status=$?

part bench_step 60 "$python" bench/pretrain_step.py --device cuda --recipes paper --size 224 --batch 256 \
    --rounds 3 --precision amp
part bench_step_bf16 30 "$python" bench/pretrain_step.py --device cuda --recipes paper --size 224 --batch 256 \
    --rounds 2 --precision amp+bf16 --methods moco_v2,hexa_moco
part bench_step_compile 60 "$python" bench/pretrain_step.py --device cuda --recipes paper --size 224 --batch 256 \
    --rounds 3 --precision amp --methods moco_v2 --compile

part bench_device_augment 25 "$python" bench/data_pipeline.py --images 16 --rounds 5 --device cuda \
    --device-batch 256 --device-only

# The random-tensor rate of MoCo-v2 under amp, from the step bench, is the end-to-end runs' yardstick.
rate=$("$python" -c "import json, sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])['img_per_s']['moco_v2_amp'])" \
    "$logs/bench_step.txt" 2>/dev/null || echo 0)
images="$logs/jpegs"
part write_jpegs 25 "$python" bench/data_pipeline.py --write-images "$images" --images 2048
part bench_train_auto 50 "$python" bench/train_throughput.py --data "$images" --recipe moco_v2_r50_200ep \
    --batch 256 --workers 16 --steps 40 --step-rate "$rate"
part bench_train_cpu 25 "$python" bench/train_throughput.py --data "$images" --recipe moco_v2_r50_200ep \
    --batch 256 --workers 16 --steps 20 --step-rate "$rate" --pipeline cpu
part bench_linear_epoch 25 "$python" bench/linear_epoch.py --device cuda --data "$images" --epochs 3
rm -rf "$images"

part bench_features 25 "$python" bench/features.py --device cuda --arch resnet50 --size 224 --batch 256
exit "$status"
