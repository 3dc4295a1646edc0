#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one call of at most TOTAL_S seconds (default 480), in this order:
#   sew       scripts/bench_sew_step.py, T=4, batch 32, 224 px, fp16: ours + LATS and ours dense, eager and
#             torch.compile, against SpikingJelly's own sew_resnet18 eager and compiled;
#   compact   scripts/bench_compact.py --scale imagenet: 25/50/75 % of the channels removed, inference and a
#             training step (ImageNet stem, width 64, T=4, 224 px, batch 32);
#   neurons   scripts/bench_neurons.py: every neuron x dtype against the copy-bandwidth floor of the same run;
#   reparam   scripts/bench_reparam.py --device cuda;
#   analyze   scripts/bench_analyze.py --device cuda;
#   tests     the whole test suite with CUDA visible (pytest-xdist and pytest-timeout when installed).
# Each step runs under its own `timeout`, cut to what is left of TOTAL_S, and is skipped when less than
# MIN_STEP_S (default 20) seconds are left. After every step the results folder DEST gets the step's log and JSON, steps.json (one row per step:
# name, limit, rc, seconds, files) and a README.md listing them; with PACK set, DEST is also packed into
# that .tar.gz after every step (what a cut-off call still brings back).
#
# Usage (repository root; CuPy, SpikingJelly, nir, nirtorch, snntorch, norse and mlxtend importable: on a
# machine whose image has torch, CuPy, pytest-xdist and pytest-timeout but not the others, install their
# wheels first, e.g. `pip install --no-index --no-deps --target /tmp/site wheels/*.whl` and
# PYTHONPATH=/tmp/site):
#   bash scripts/gpu_checks.sh                                   # DEST=benchmarks/<UTC date>_<gpu>
#   PACK=$OUT/gpu_results.tar.gz STEPS="sew compact" bash scripts/gpu_checks.sh
set -u
PY=${PYTHON:-python3}
TOTAL_S=${TOTAL_S:-480}
STEPS=${STEPS:-"sew compact neurons reparam analyze tests"}
WORKERS=${WORKERS:-12}
START=$(date +%s)
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
SLUG=$(echo "${GPU:-nogpu}" | tr 'A-Z' 'a-z' | grep -oE '[a-z][0-9]+' | head -n 1)
DEST=${DEST:-benchmarks/$(date -u +%F)_${SLUG:-gpu}}
PACK=${PACK:-}
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1
ROWS=()  # steps.json rows
LINES=()  # README table rows
MIN_STEP_S=${MIN_STEP_S:-20}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    $PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
    $PY -c "import importlib.metadata as m; print(*(f'{p} {m.version(p)}' for p in ('spikingjelly', 'cupy-cuda13x', 'numpy', 'nir', 'nirtorch', 'snntorch', 'norse') if __import__('importlib.util').util.find_spec(p.split('-')[0])), sep='; ')"
} >"$DEST/env.txt" 2>&1
cat "$DEST/env.txt"

# write_results: steps.json and README.md from ROWS (after every step, so a cut-off call keeps them)
write_results() {
    local IFS=,
    printf '{"gpu": "%s", "total_limit_s": %s, "steps": [%s]}\n' "${GPU:-none}" "$TOTAL_S" "${ROWS[*]}" \
        >"$DEST/steps.json"
    {
        echo "# GPU checks: ${GPU:-no GPU}, $(date -u +%F)"
        echo
        echo "Written by \`scripts/gpu_checks.sh\` after every step (limit ${TOTAL_S} s in all); \`env.txt\` holds"
        echo "the software. Each step: its log \`<step>.log\` and, for a benchmark, its JSON \`<step>.json\`."
        echo "rc 124 or 137: the step ran out of its time limit (sew.json and compact.json are rewritten after"
        echo "every row, so they keep the rows measured before; the other benchmarks write at their end)."
        echo
        echo "| step | limit s | rc | seconds |"
        echo "|---|---|---|---|"
        printf '%s\n' "${LINES[@]}"
    } >"$DEST/README.md"
    if [[ -n "$PACK" ]]; then tar -czf "$PACK" -C "$(dirname "$DEST")" "$(basename "$DEST")" 2>/dev/null; fi
}

# step NAME LIMIT_S COMMAND...: COMMAND under `timeout` (LIMIT_S, cut to what is left), logged, recorded.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((TOTAL_S - ($(date +%s) - START) - 5))
    ((limit > left)) && limit=$left
    if ((limit < MIN_STEP_S)); then
        echo "=== $name skipped: ${left}s left"
        ROWS+=("{\"step\": \"$name\", \"limit_s\": 0, \"rc\": null, \"seconds\": 0, \"skipped\": true}")
        LINES+=("| $name | - | skipped (${left} s left) | - |")
        write_results
        return
    fi
    local t0=$(date +%s)
    echo "=== $name (limit ${limit}s) at +$((t0 - START))s"
    timeout --kill-after=5 "$limit" "$@" >"$DEST/$name.log" 2>&1
    local rc=$? secs=$(($(date +%s) - t0))
    echo "=== $name rc=$rc ${secs}s"
    ROWS+=("{\"step\": \"$name\", \"limit_s\": $limit, \"rc\": $rc, \"seconds\": $secs, \"skipped\": false}")
    LINES+=("| $name | $limit | $rc | $secs |")
    write_results
}

wants() { [[ " $STEPS " == *" $1 "* ]]; }

write_results
if wants sew; then
    step sew 150 $PY scripts/bench_sew_step.py --precisions fp16 --backends sj_model,cupy \
        --modes eager,default --weights dense,lats --baseline-weights dense --warmup 8 --iters 20 --repeats 3 \
        --output "$DEST/sew.json"
fi
if wants compact; then
    step compact 70 $PY scripts/bench_compact.py --scale imagenet --device cuda --threads 0 --repeats-wide 10 \
        --json "$DEST/compact.json"
fi
if wants neurons; then
    step neurons 60 $PY scripts/bench_neurons.py --neurons if,lif,plif --dtypes fp32,fp16,bf16 \
        --iters 30 --repeats 5 --warmup 5 --output "$DEST/neurons.json"
fi
if wants reparam; then
    step reparam 30 $PY scripts/bench_reparam.py --device cuda --rounds 10 --output "$DEST/reparam.json"
fi
if wants analyze; then
    step analyze 30 $PY scripts/bench_analyze.py --device cuda --out "$DEST/analyze.json"
fi
if wants tests; then
    PARALLEL=()
    $PY -c "import xdist" 2>/dev/null && PARALLEL+=(-n "$WORKERS")
    $PY -c "import pytest_timeout" 2>/dev/null && PARALLEL+=(--timeout 100)
    step tests 300 $PY -m pytest "${PARALLEL[@]}" -q -rfEs -o addopts="" tests --junitxml="$DEST/tests.xml"
fi
echo "=== done in $(($(date +%s) - START))s; results in $DEST"
cat "$DEST/README.md"
