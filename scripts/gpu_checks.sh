#!/usr/bin/env bash
# The GPU checks of docs/backends_and_gpu.md, "The GPU path", on a machine with a CUDA GPU and PyTorch (no ROS needed):
# the device-pipeline tests (CUDA against the CPU reference, device paste, steady-state memory), the
# external instance models' NMS and mask assembly on the GPU against the CPU (needs onnx and onnxruntime)
# and the GPU benchmark (ours against torchvision's eager models). Logs go to $1 (default gpu_checks/).
# Shared CamVid frames: ../shared/data, or SEG_PERCEPTION_SHARED_DATA.
set -uo pipefail
out=${1:-gpu_checks}
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$python" -c 'import sys, torch, torchvision; print("python", sys.version.split()[0], "torch", torch.__version__,
"torchvision", torchvision.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version())'
} 2>&1 | tee "$out/versions.txt"
timeout "${BENCH_TIMEOUT:-330}" "$python" -m seg_models bench --device cuda --iterations "${ITERATIONS:-20}" \
  --warmup 3 2>&1 | grep -v 'NO CHECKPOINT GIVEN' | tee "$out/bench.txt"
bench=$?
timeout "${TEST_TIMEOUT:-240}" "$python" -m pytest test/test_device_pipeline.py -v -rs -p no:cacheprovider 2>&1 \
  | tee "$out/tests.txt"
tests=$?
timeout "${TEST_TIMEOUT:-240}" "$python" -m pytest test/test_external_instance.py -m gpu -v -rs -p no:cacheprovider \
  2>&1 | tee "$out/tests_external_instance.txt"
external=$?
echo "bench exit $bench, tests exit $tests, external instance tests exit $external"
[ "$bench" -eq 0 ] && [ "$tests" -eq 0 ] && [ "$external" -eq 0 ]
