#!/usr/bin/env bash
# Ship the auto model from a finished FP32 run: the INT8 ablation (PTQ, QAT, QAT + output distillation,
# QDR; 3 seeds) on it, the QDR seed that keeps most of its teacher on CBSD68 (qdr-train pick; the run's
# data.train may not hold CBSD68 or the COCO photos, checked first: the denoise specialist the shipped
# chain started from did train on CBSD68, docs/training.md), and only if that student beats the shipped one's
# mean PSNR on CBSD68, no condition falls over 0.3 dB there, it passes at least as many CBSD68 photos
# bit for bit, the same holds on the 21 COCO photos of the detection sets (camera-sized frames; a mean
# equal to the shipped one's is enough there) and it costs FastestDet at most 0.5 mAP50-95 points on the 21 labelled COCO photos given
# clean (COCO is not held out; the target's own set): the FP32 release, that student released as
# models/auto/efm_int8*, then the condition head, real low light and detection reports. A run that
# fails the gate leaves models/ and results/ as they were and exits 3; a step that fails or is stopped
# later, during the release, restores them too (nothing is half released). About 40 minutes on the
# 2-core dev CPU.
#   scripts/release_auto.sh runs/auto_fp32_ft "<the FP32 training commands, for the model card>"
set -Eeuo pipefail  # -E: the ERR trap also fires for a step that fails inside run()
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUN="$1"
FP32_COMMAND="$2"
PY=.venv/bin/python
FASTESTDET=../shared/data/detection/FastestDet/FastestDet.onnx
# QAT on the FP32 run's large crops: on 64-pixel crops the whole-frame context (pooled over an 8x8
# bottleneck, zero padding in 44% of it) learns values a full frame never produces.
# The students train on the FP32 stages' photos, so that CBSD68 stays free to pick the seed on.
# Haze windowed as in the teacher's run (its data.haze_window; here on the students' 192-pixel crops).
READ_WINDOW="import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['data'].get('haze_window', [1.0, 1.0]))"
HAZE_WINDOW=$($PY -c "$READ_WINDOW" "$RUN/config.yaml" | tr -d ' ')
# the condition head is scored by the labelling rule its teacher trained with (data.noise_label)
READ_NOISE="import sys, yaml; v = yaml.safe_load(open(sys.argv[1]))['data'].get('noise_label'); print('' if v is None else v)"
NOISE_LABEL=$($PY -c "$READ_NOISE" "$RUN/config.yaml")
CONDITIONS_OVERRIDES=()
[[ -z "$NOISE_LABEL" ]] || CONDITIONS_OVERRIDES=("data.noise_label=$NOISE_LABEL")
INT8_OVERRIDES=(train.progress=false data.crop=192 data.batch=4
    "data.train=[clean/CBSD432,clean/Urban100,clean/SunHays80,clean/Set14,clean/LIVE1]" "data.haze_window=$HAZE_WINDOW")
ABLATION=results/ablation/auto  # ablate --out; its task folder auto/ holds pick/fp32/ and seed<N>/<variant>/
PICK=(--ablation "$ABLATION/auto" --task auto --teacher models/auto/efm_fp32.pt --data clean/CBSD68)
ALSO='detection/coco8*/images/*'  # pick's second selection set: 640-pixel frames, where CBSD68 missed a haze loss
SHIPPED=results/eval/auto_int8_pick.json  # the shipped student's pick report: what a release must beat
DETECTION=results/detection/auto_fastestdet
STAGED=(models/auto "$ABLATION" results/eval "$DETECTION")  # results/eval holds $SHIPPED and every report below
if [[ -n "$(git status --porcelain --untracked-files=all -- "${STAGED[@]}")" ]]; then
    echo "uncommitted or untracked files under ${STAGED[*]}: commit, stash or move them first (a rejected run" \
        "restores the committed state there and removes anything else)" >&2
    exit 2
fi
AGAINST=()  # pick reads the shipped report before it writes the new one over it
[[ -f "$SHIPPED" ]] && AGAINST=(--against "$SHIPPED")
# back to the committed files: the tracked ones checked out, the untracked ones the run added removed
# (`git checkout -- PATHS` alone refuses every path when one is untracked, e.g. on a first release)
GATE=""  # the detection gate's temporary models folder
restore() {
    git ls-files -z -- "${STAGED[@]}" | xargs -0 -r git checkout --
    git clean -fdq -- "${STAGED[@]}"
    [[ -z "$GATE" ]] || rm -rf "$GATE"
}
# The long steps run in their own session and are waited for: bash runs a trap only between commands,
# so a SIGTERM to this script alone would wait for a 40-minute ablation to end; the trap stops the
# step's whole process group (ablate's parallel jobs too), then restores.
CHILD=""
run() { setsid "$@" & CHILD=$!; wait "$CHILD"; }
stop() {
    [[ -z "$CHILD" ]] || kill -TERM -- -"$CHILD" 2>/dev/null || true
    wait || true
    restore
    echo "interrupted: models/ and results/ restored" >&2
    exit "$1"
}
trap 'restore; echo "failed: models/ and results/ restored" >&2' ERR
trap 'stop 130' INT
trap 'stop 143' TERM
trap 'stop 129' HUP
# the teacher may not have trained on the sets the students are chosen on (the run's own config says)
$PY -c "import sys; from pathlib import Path; from qdr_train.data.datasets import data_root
from qdr_train.release.pick import check_untrained
check_untrained([Path(sys.argv[1])], data_root(''), sys.argv[2:])" "$RUN" clean/CBSD68 "$ALSO"
cp "$RUN/model.pt" models/auto/efm_fp32.pt  # the teacher the students distil; the FP32 release below exports it
run $PY -m qdr_train.cli ablate --task auto --teacher models/auto/efm_fp32.pt --variants ptq qat qat_out qdr \
    --seeds 0 1 2 --jobs 2 --out "$ABLATION" "${INT8_OVERRIDES[@]}"
# the gate's verdicts are exit codes, read here (a command left of || trips neither the trap nor set -e)
PICKED=0
run $PY -m qdr_train.cli pick "${PICK[@]}" --also "$ALSO" --json "$SHIPPED" "${AGAINST[@]}" || PICKED=$?
if (( PICKED != 0 )); then
    restore
    echo "not released: $RUN's INT8 student does not beat the shipped one on CBSD68 and the COCO photos," \
        "degraded or clean (pick exit $PICKED); models/ and results/ are as they were" >&2
    exit 3
fi
read -r SEED STUDENT < <($PY -c "import json; r = json.load(open('$SHIPPED')); print(r['seed'], r['run'])")
# the detection gate, before any held-out report: the picked student and its teacher as a models folder
GATE=$(mktemp -d)
mkdir "$GATE/auto"
cp "$ABLATION"/auto/pick/fp32/efm_fp32.onnx "$ABLATION"/auto/seed"$SEED"/qdr/efm_int8*.onnx "$GATE/auto/"
# the Q/DQ rules first, before anything is written to models/
CHECKED=0
{ $PY -m qdr_train.cli check-int8 "$GATE/auto/efm_int8.onnx" \
    && $PY -m qdr_train.cli check-int8 --cpu "$GATE/auto/efm_int8_cpu.onnx"; } || CHECKED=$?
if (( CHECKED != 0 )); then
    restore
    echo "not released: $RUN's INT8 student breaks the INT8 rules (check-int8 exit $CHECKED, above);" \
        "models/ and results/ are as they were" >&2
    exit 3
fi
DETECTED=0
run $PY -m qdr_ros.tools.bench detection --tasks clean --restorer auto --models "$GATE" --detector "$FASTESTDET" \
    --pseudo-sets --real-sets --out "$GATE/detection" --fail-under -0.5 --no-progress || DETECTED=$?
rm -rf "$GATE"
GATE=""
if (( DETECTED != 0 )); then
    restore
    echo "not released: $RUN's INT8 student costs the detector more than 0.5 mAP50-95 points on clean COCO frames" \
        "(qdr-bench detection exit $DETECTED); models/ and results/ are as they were" >&2
    exit 3
fi
# the gate is passed: the release writes models/ and results/; the traps stay, so a failure restores them
run $PY -m qdr_train.cli release --run "$RUN" --eval-data clean/Kodak24 --command "$FP32_COMMAND"
run $PY -m qdr_train.cli release --run "$STUDENT" --eval-data clean/Kodak24 --command \
    "qdr-train fit --task auto --config qdr_train/configs/int8.yaml stage=qdr quant.teacher=models/auto/efm_fp32.pt seed=$SEED ${INT8_OVERRIDES[*]} (the qdr run of: qdr-train ablate --task auto --teacher models/auto/efm_fp32.pt --variants ptq qat qat_out qdr --seeds 0 1 2 --jobs 2 ${INT8_OVERRIDES[*]}; seed $SEED picked by: qdr-train pick ${PICK[*]} --also '$ALSO')"
run $PY -m qdr_train.cli check-int8 models/auto/efm_int8.onnx
run $PY -m qdr_train.cli check-int8 --cpu models/auto/efm_int8_cpu.onnx
run $PY -m qdr_train.cli conditions --model models/auto/efm_int8.onnx --json results/eval/auto_conditions_int8.json \
    "${CONDITIONS_OVERRIDES[@]}"
# clean frames (CBSD68: the auto FP32 stages never trained on it), as PNG and as a compressed camera's JPEGs
run $PY -m qdr_train.cli eval --task clean --model models/auto/efm_int8.onnx --clean ../shared/data/clean/CBSD68 \
    --no-baseline --json results/eval/auto_clean_cbsd68_int8.json
for quality in 85 75 60; do
    run $PY -m qdr_train.cli eval --task clean --model models/auto/efm_int8.onnx --clean ../shared/data/clean/CBSD68 \
        --jpeg "$quality" --no-baseline --json "results/eval/auto_clean_jpeg${quality}_int8.json"
done
run $PY -m qdr_train.cli real-lowlight --model models/auto/efm_int8.onnx --json results/eval/auto_dicm_int8.json \
    --mosaic out/dicm_auto.jpg
run $PY -m qdr_train.cli real-lowlight --model models/lowlight/efm_int8.onnx --json results/eval/lowlight_dicm_int8.json
run $PY -m qdr_ros.tools.bench detection --tasks clean --restorer auto --detector "$FASTESTDET" --pseudo-sets \
    --real-sets detection/DAWN_fog --real-models auto dehaze denoise --out "$DETECTION" \
    --no-progress
trap - ERR INT TERM HUP
echo "released: models/auto and its reports under results/ (review with git status, then commit)"
