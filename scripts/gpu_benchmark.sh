#!/usr/bin/env bash
# Issue 9's GPU table in one command: swiftnet_rn18 and ldn121 at 1024x2048, batch 1 and 4 (four
# cameras), fp32 and fp16, eager and torch.compile'd; then issue 19's onnxruntime rows: the CUDA and
# TensorRT execution providers, fp32 and fp16, batch 1 and 4 at 2 MP, each timed interleaved with the
# torch runtime in the same run (per-stage table and paired ratios). Every run appends a dated block
# (command, device, commit, load) to docs/benchmarks.md and writes its JSON to build/benchmarks/.
# Exported graphs and TensorRT engines are cached in $OPENSET_PERCEPTION_CACHE (default here:
# build/cache); the first TensorRT run of a size builds its engine (minutes), warm-up included.
#
#   scripts/gpu_benchmark.sh                   # the full table (8 + 8 runs x 2 backbones)
#   scripts/gpu_benchmark.sh --iterations 200  # extra options go to every run
#
# Uses .venv/bin/python when the repository has one, else $PYTHON or python.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_benchmark.sh: no CUDA device visible to torch; nothing was run" >&2
    exit 1
fi
# The onnxruntime rows need onnxruntime-gpu with both providers; check before anything runs.
if ! "$PYTHON" - <<'PY'
import sys
try:
    import onnxruntime
except ImportError:
    sys.exit("gpu_benchmark.sh: the onnxruntime rows need the onnxruntime-gpu package (pip install onnxruntime-gpu)")
missing = {"CUDAExecutionProvider", "TensorrtExecutionProvider"} - set(onnxruntime.get_available_providers())
if missing:
    sys.exit(f"gpu_benchmark.sh: onnxruntime lacks {', '.join(sorted(missing))} (install onnxruntime-gpu "
             "and TensorRT, see README 'Performance'); nothing was run")
PY
then
    exit 1
fi
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv || true
export OPENSET_PERCEPTION_CACHE="${OPENSET_PERCEPTION_CACHE:-build/cache}"

mkdir -p build/benchmarks
for compile in "" "--compile"; do
    for precision in fp32 fp16; do
        for batch in 1 4; do
            name="gpu_${precision}_b${batch}${compile:+_compiled}"
            "$PYTHON" -m openset_perception.cli.main benchmark \
                --backbone swiftnet_rn18 --backbone ldn121 --size 1024x2048 --batch-size "$batch" \
                --device cuda --precision "$precision" $compile --iterations 100 --warmup 10 \
                --out "build/benchmarks/$name.json" --append-markdown docs/benchmarks.md "$@"
        done
    done
done

for provider in cuda tensorrt; do
    for precision in fp32 fp16; do
        for batch in 1 4; do
            name="gpu_onnxruntime_${provider}_${precision}_b${batch}"
            "$PYTHON" -m openset_perception.cli.main benchmark \
                --backbone swiftnet_rn18 --backbone ldn121 --size 1024x2048 --batch-size "$batch" \
                --device cuda --precision "$precision" --runtime torch,onnxruntime \
                --execution-provider "$provider" --iterations 100 --warmup 10 \
                --out "build/benchmarks/$name.json" --append-markdown docs/benchmarks.md "$@"
        done
    done
done
