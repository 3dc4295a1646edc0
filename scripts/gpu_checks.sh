#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one call, in order of importance:
#   1. tests/test_neuron.py (kernel parity against SpikingJelly, CUDA graphs, autocast, SEW ResNet-18, the
#      nvcc/NVRTC compile tests), then the other GPU tests (tests/test_gpu.py, tests/test_analysis.py, tests/test_nm.py);
#   2. scripts/bench_neurons.py (IF, LIF, PLIF; fp32, fp16, bf16; T=4, 32x64x56x56);
#   3. scripts/bench_sew_step.py (T=4, batch 32, 224 px, fp16 autocast + GradScaler): ours + LATS against
#      SpikingJelly's own sew_resnet18, eager and torch.compile;
#   4. scripts/bench_compact.py, scripts/bench_reparam.py and scripts/bench_analyze.py on the GPU;
#   5. scripts/bench_sew_step.py eager with every neuron backend, fp16 and fp32;
#   6. the README's main job (scripts/train_sew.py --method lats) on the GPU.
# STEPS="suite" also runs the engine/method/structured CPU tests with CUDA as the default device.
# Each step has its own time limit, so one slow step cannot starve the rest. Logs and JSON go to $OUT
# (default runs/gpu); after every step they are packed into $OUT/gpu_results.tar.gz.
#
# Usage (repository root, CuPy and SpikingJelly importable):
#   OUT=runs/gpu bash scripts/gpu_checks.sh            # everything
#   OUT=runs/gpu STEPS="tests neurons" bash scripts/gpu_checks.sh
set -u
OUT=${OUT:-runs/gpu}
PY=${PYTHON:-python3}
STEPS=${STEPS:-"tests gputests neurons sew compact reparam analyze default"}
WORKERS=${WORKERS:-12}
mkdir -p "$OUT/logs" "$OUT/bench"
export PYTHONUNBUFFERED=1
START=$(date +%s)
SUMMARY="$OUT/logs/summary.txt"
: >"$SUMMARY"

pack() { tar -czf "$OUT/gpu_results.tar.gz" -C "$OUT" logs bench 2>/dev/null; }

# step NAME LIMIT_S COMMAND...: runs COMMAND under `timeout`, logs it, records rc and seconds.
step() {
    local name=$1 limit=$2
    shift 2
    local t0=$(date +%s)
    echo "=== $name (limit ${limit}s) at +$((t0 - START))s"
    timeout --kill-after=10 "$limit" "$@" >"$OUT/logs/$name.log" 2>&1
    local rc=$?
    local line="$name rc=$rc $(($(date +%s) - t0))s"
    echo "=== $line"
    echo "$line" >>"$SUMMARY"
    pack
    return $rc
}

wants() { [[ " $STEPS " == *" $1 "* ]]; }

{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    $PY -c "import torch, cupy, spikingjelly, numpy, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cupy', cupy.__version__, 'numpy', numpy.__version__, 'gpu', torch.cuda.get_device_name())"
    $PY -c "import importlib.metadata as m; print('spikingjelly', m.version('spikingjelly'))"
} >"$OUT/logs/env.txt" 2>&1
cat "$OUT/logs/env.txt"

PARALLEL=()
$PY -c "import xdist" 2>/dev/null && PARALLEL+=(-n "$WORKERS")
$PY -c "import pytest_timeout" 2>/dev/null && PARALLEL+=(--timeout 140)
if wants tests; then
    step tests_neuron 150 $PY -m pytest "${PARALLEL[@]}" -q -rfEs tests/test_neuron.py \
        -o addopts="" --junitxml="$OUT/logs/tests_neuron.xml"
fi
if wants gputests; then
    step tests_gpu_other 70 $PY -m pytest -q -rfEs -m gpu tests/test_gpu.py tests/test_analysis.py tests/test_nm.py -o addopts=""
fi
if wants suite; then
    # the CPU tests of the training engine, methods and structured pruning, with CUDA as the default device
    step tests_suite_on_cuda 90 $PY -m pytest "${PARALLEL[@]}" -q -rfE -o addopts="" tests/test_training.py \
        tests/test_structured.py tests/test_methods.py tests/test_pruner_api.py
fi
if wants neurons; then
    step bench_neurons 80 $PY scripts/bench_neurons.py --neurons if,lif,plif --dtypes fp32,fp16,bf16 \
        --iters 30 --repeats 5 --warmup 5 --output "$OUT/bench/bench_neurons.json"
fi
if wants sew; then
    step bench_sew_compile 170 $PY scripts/bench_sew_step.py --precisions fp16 --backends sj_model,cupy \
        --modes eager,default --weights lats --baseline-weights dense --warmup 8 --iters 20 --repeats 3 \
        --output "$OUT/bench/bench_sew_step_compile.json"
fi
if wants compact; then
    step bench_compact 40 $PY scripts/bench_compact.py --device cuda --threads 0 --repeats 20 \
        --repeats-wide 20 --json "$OUT/bench/bench_compact_cuda.json"
fi
if wants reparam; then
    step bench_reparam 40 $PY scripts/bench_reparam.py --device cuda --rounds 10 \
        --output "$OUT/bench/bench_reparam_cuda.json"
fi
if wants analyze; then
    step bench_analyze 30 $PY scripts/bench_analyze.py --device cuda --out "$OUT/bench/bench_analyze_cuda.json"
fi
if wants sew; then
    step bench_sew_eager 60 $PY scripts/bench_sew_step.py --precisions fp16,fp32 \
        --backends sj_model,spikingjelly,cupy --modes eager --weights dense,lats --baseline-weights dense \
        --warmup 5 --iters 20 --repeats 3 --output "$OUT/bench/bench_sew_step_eager.json"
fi
if wants default; then
    # the README's main job (embedded MNIST, LATS); on a GPU machine --device defaults to cuda
    step default_run 70 $PY scripts/train_sew.py --method lats --output-dir "$OUT/bench/runs" --quiet
    cp "$OUT"/bench/runs/*/summary.json "$OUT/bench/default_run_summary.json" 2>/dev/null
    rm -rf "$OUT/bench/runs"
fi

echo "=== summary (total $(($(date +%s) - START))s)"
cat "$SUMMARY"
for f in "$OUT"/logs/*.log; do
    echo "--- tail of $(basename "$f")"
    tail -n 12 "$f"
done
pack
