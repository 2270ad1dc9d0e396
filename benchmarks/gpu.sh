#!/usr/bin/env bash
# The GPU figures issues 5 and 14 ask for, as one prepared command for a lent machine (the
# `device` tool): each step is time-boxed so a slow one cannot starve the rest (together at most
# 8 minutes), everything it prints goes to $OUT/gpu.log, and benchmarks/RESULTS.md (to which
# every step appends) is copied to $OUT.
#
#   bash benchmarks/gpu.sh            # on the GPU machine, from the repository root (<= 8 min)
#   SMOKE=1 bash benchmarks/gpu.sh    # the same steps at toy sizes: checks the script on a CPU
#
# Steps, in order of value: the same render twice with XLA's deterministic flag off, then on
# (bit-identical or not, the flag's cost, and the scatters' part, put back); the whole
# InceptionV1 mixed4a layer (508 channels x 4 seeds x 512 steps at 224 px, determinism on, the
# model in bfloat16: float32's own limit alone is ~114 s of the 60 s asked for) with its ratio
# to the bfloat16 limit; where a step's time goes (the GPU's own profile, by part of the step);
# the float32 limit and the old way at 224 px.
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
    same=(--size 32 --batch 4 --steps 2 --no-record)
    whole=(--units 4 --seeds 1 --steps 4 --size 64 --batch 4 --model-dtype bfloat16 --no-record)
    at=(--size 64 --batch 4 --steps 2 --rounds 1 --no-record)
    old=(--old-units 1)
    prof=(--size 32 --batch 4 --steps 2 --no-record)
else
    same=(--size 224 --batch 128 --steps 32)
    whole=(--units 0 --seeds 4 --steps 512 --size 224 --batch 1016 --model-dtype bfloat16)
    at=(--size 224 --batch 64 --steps 16 --rounds 2)
    old=()
    prof=(--size 224 --batch 256 --steps 8)
fi

# With the flag on, only fvjax's program: the scatters' under the flag compiled for minutes.
step 70 benchmarks/determinism.py --model inceptionv1 --xla-deterministic off "${same[@]}"
step 60 benchmarks/determinism.py --model inceptionv1 --xla-deterministic on --no-scatters \
    "${same[@]}"
step 240 benchmarks/layer_job.py --model inceptionv1 "${whole[@]}"
step 50 benchmarks/profile_step.py --model inceptionv1 "${prof[@]}" --trace-dir "$OUT/profile"
step 40 benchmarks/limit.py --model inceptionv1 "${at[@]}" "${old[@]}"
cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
