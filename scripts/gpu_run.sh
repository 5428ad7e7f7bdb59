#!/usr/bin/env bash
# What a CUDA machine measures in one pass, with the packages such a machine's python3 usually has
# (torch, onnxruntime, onnx, opencv, pyyaml, tqdm, psutil, matplotlib; nothing is installed):
# the engine benchmark (torch FP32/FP16 on the GPU beside the CPU engines), then the INT8 ablation of
# the four tasks over five seeds, its runs spread over parallel processes sharing the GPU.
#
#   QDR_DATA=/path/to/data scripts/gpu_run.sh OUT_DIR [ABLATION_SECONDS [JOBS]]
#
# The ablation stops after ABLATION_SECONDS (default 420); what finished is tabled, and rerunning
# the same command later trains only the missing runs.
set -u
out=${1:?usage: scripts/gpu_run.sh OUT_DIR [ABLATION_SECONDS [JOBS]]}
seconds=${2:-420}
jobs=${3:-14}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
timeout -k 10 120 python3 -m qdr_ros.tools.bench restore --no-ros --out "$out/bench" --json "$out/bench/restore.json" 2>&1 | tee "$out/bench.log"
ablate=(python3 -m qdr_train.cli ablate train.iters=250 data.crop=64 train.progress=false
        --task denoise derain lowlight dehaze --seeds 0 1 2 3 4 --out "$out/ablation")
timeout -s INT -k 30 "$seconds" "${ablate[@]}" --jobs "$jobs" 2>&1 | tee "$out/ablation.log"
"${ablate[@]}" --jobs "$jobs" --report-only 2>&1 | tee "$out/ablation_report.log"
