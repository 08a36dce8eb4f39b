#!/usr/bin/env bash
# The GPU check: one call of the device tool on a lent GPU, at most 9 minutes including installs.
#
# Prepare here (CPU), once:   make gpu-prepare        (wheels into .whl/, the dev basins into .devdata/; both ignored)
# Run there (device tool):    command "bash benchmarks/gpu_check.sh", carry [".whl", ".devdata"], timeout_s 560
#
# Writes its figures under $OUT: cuda_tests.log, ealstm_step.md, refresh.txt, gradients.txt, study.md (+ the study's
# results_*.csv), and gpu_check.log with everything. Every step has its own time limit; whatever a step finishes
# before its limit is kept, so one slow step does not lose the others. GPU_CHECK_DEVICE=cpu and
# GPU_CHECK_SMALL=1 rehearse the script on a CPU with tiny sizes (how it was timed before any GPU was lent).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
DEVICE=${GPU_CHECK_DEVICE:-cuda:0}
SMALL=${GPU_CHECK_SMALL:-0}
BUDGET=${GPU_CHECK_SECONDS:-520}
START=$(date +%s)
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

left() { echo $(( BUDGET - ($(date +%s) - START) )); }
step() {  # step NAME SECONDS COMMAND...: run COMMAND with at most SECONDS (and never past the budget)
    local name=$1 limit=$2; shift 2
    local budget; budget=$(left)
    (( limit > budget )) && limit=$budget
    if (( limit < 20 )); then echo "== $name: skipped, ${budget}s left"; return; fi
    echo "== $name (at most ${limit}s, $(left)s left)"
    timeout --signal=INT --kill-after=15 "$limit" "$@"
    echo "== $name: exit $?"
}

if [[ -d .whl ]] && ! python3 -c "import neuralhydrology" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export NH_XB_TEST_NO_INSTALL_CHECK=1   # the tests import this checkout, not an installed copy
python3 -c "import torch, neuralhydrology; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '', 'NH', __import__('neuralhydrology.__about__').__about__.__version__)"
DATA=.devdata/camels_us_caravan

if [[ $SMALL == 1 ]]; then
    BASINS="24 48"; HIDDEN=32; SEQ=60; STEP_BATCHES="64"; STUDY="--subset 12 --hidden 32 --seq 60 --epochs 1 \
--max-updates 20 --finetune-epochs 1"
else
    BASINS="531 1678"; HIDDEN=256; SEQ=270; STEP_BATCHES="256 2048"; STUDY="--subset 30 --hidden 256 --seq 270 \
--epochs 2 --max-updates 300 --finetune-epochs 1"
fi

step cuda_tests 90 python3 -m pytest -q -p no:cacheprovider tests/test_ealstm_model.py tests/test_ealstm_weights.py \
    tests/test_batched_gradients.py -k "cuda or batched" 2>&1 | tee "$OUT/cuda_tests.log"
step ealstm_step 60 python3 benchmarks/ealstm_step.py --device "$DEVICE" --batch-sizes $STEP_BATCHES --repeats 5 \
    --hidden-size $HIDDEN --seq-length $SEQ \
    --warmup 2 | tee "$OUT/ealstm_step.md"
step refresh 150 python3 benchmarks/influence.py refresh --basins $BASINS --device "$DEVICE" --hidden $HIDDEN \
    --seq $SEQ --repeats 1 --years 3 | tee "$OUT/refresh.txt"
step gradients 60 python3 benchmarks/influence.py gradients --basins ${BASINS%% *} --device "$DEVICE" \
    --hidden $HIDDEN --seq $SEQ --repeats 1 | tee "$OUT/gradients.txt"
if [[ -d $DATA ]]; then
    step study 600 python3 benchmarks/heterogeneous_vs_homogeneous.py real --data "$DATA" --out /tmp/gpu_study \
        --device "$DEVICE" --seeds 1 --workers 1 --temperatures 1 $STUDY
    cp /tmp/gpu_study/summary.md "$OUT/study.md" 2>/dev/null
    cp /tmp/gpu_study/design/results*.csv "$OUT/" 2>/dev/null
    cp /tmp/gpu_study/choices.json "$OUT/" 2>/dev/null
else
    echo "== study: skipped, $DATA not carried (make gpu-prepare)"
fi
echo "== gpu check finished in $(( $(date +%s) - START ))s"
