#!/usr/bin/env bash
# The GPU figures issue 5 asks for, as one prepared command for a lent machine (the `device`
# tool): each step is time-boxed so a slow one cannot starve the rest, everything it prints goes
# to $OUT/gpu.log, and benchmarks/RESULTS.md (to which every step appends) is copied to $OUT.
#
#   bash benchmarks/gpu.sh            # on the GPU machine, from the repository root (~9 min)
#   SMOKE=1 bash benchmarks/gpu.sh    # the same steps at toy sizes: checks the script on a CPU
#
# Steps, in order of value: the whole InceptionV1 mixed4a layer (508 channels x 4 seeds x 512
# steps at 224 px) with its ratio to the limit; the limit and the old way at 224 px, batch 64;
# where a step's time goes; the largest batch and what remat saves, from the GPU's own plan.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/gpu.log"

step() {  # step SECONDS ARGS...: run one benchmark, time-boxed, logged; failures do not stop us
    local limit=$1
    shift
    echo "== $(date -u +%T) $*" | tee -a "$LOG"
    timeout "$limit" python "$@" 2>&1 | tee -a "$LOG"
    echo "== exit ${PIPESTATUS[0]}" | tee -a "$LOG"
}

{ nvidia-smi -L || true; python -c "import jax; print(jax.__version__, jax.devices())"; } \
    2>&1 | tee -a "$LOG"

if [[ -n "${SMOKE:-}" ]]; then  # nothing is appended to RESULTS.md
    whole=(--units 4 --seeds 1 --steps 4 --size 64 --batch 4 --no-record)
    at=(--size 64 --batch 4 --steps 2 --rounds 1 --no-record)
    old=(--old-units 1)
    memory=(--models worldnet --batches 2 4 --dtypes float32 --no-record)
else
    whole=(--units 0 --seeds 4 --steps 512 --size 224 --batch 512)
    at=(--size 224 --batch 64 --steps 16 --rounds 2)
    old=()
    memory=(--models inceptionv1 resnet50 vgg16 vit_b_16 --dtypes float32 bfloat16)
fi

step 330 benchmarks/layer_job.py --model inceptionv1 "${whole[@]}"
step 90 benchmarks/limit.py --model inceptionv1 "${at[@]}" "${old[@]}"
step 60 benchmarks/breakdown.py --model inceptionv1 "${at[@]}"
step 120 benchmarks/memory.py "${memory[@]}"
cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
