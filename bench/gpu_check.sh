#!/usr/bin/env bash
# GPU check of the runtime's execution providers (issue 5). Two steps, under 5 minutes together:
#
#   bench/gpu_check.sh prepare   HERE, with the project's .venv: builds a Bento of an MLP with four
#                                1024-wide layers and downloads the runtime's Python 3.12 wheels into
#                                bench/.work/gpu/ (about 20 MiB).
#   bench/gpu_check.sh run       ON THE GPU MACHINE, with bench/.work/gpu carried (no registry there):
#                                installs the carried wheels into /tmp/bento-site, makes sure an
#                                onnxruntime with CUDA is importable (a carried onnxruntime-gpu wheel in
#                                bench/.work/gpu/ort-gpu/, else `pip install onnxruntime-gpu` if a registry
#                                answers, else says so), serves the Bento with BENTO_COMPILE_DEVICE=cpu and
#                                =cuda, checks /metadata reports CUDAExecutionProvider, prints a CPU vs CUDA
#                                latency/throughput table. Exit 0 = CUDA in use, 2 = no CUDA onnxruntime, 1 = failure.
#
# With the device tool: run(command="bash bench/gpu_check.sh run", carry=["bench/.work/gpu"], timeout_s=420).
# Note: onnxruntime-gpu is a 250 MB wheel (over the 64 MiB that travels) and is built for CUDA 12, while
# the lent machines' Python environment has CUDA 13 libraries: expect "NOT RUN" there unless the image
# gains a CUDA-capable onnxruntime.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=bench/.work/gpu

case "${1:-}" in
prepare)
    PY=${PY:-.venv/bin/python}
    "$PY" bench/gpu_check.py prepare
    ;;
run)
    PY=${PY:-python3}
    [ -d "$WORK/bento" ] && [ -d "$WORK/wheels" ] || { echo "no $WORK: run 'bench/gpu_check.sh prepare' first and carry $WORK"; exit 1; }
    SITE=/tmp/bento-site
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" --upgrade "$WORK"/wheels/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    if ! "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" 2>/dev/null; then
        GPU_SITE=/tmp/ort-gpu-site   # its own folder, first on the path: never beside the CPU onnxruntime
        if ls "$WORK"/ort-gpu/*.whl >/dev/null 2>&1; then
            echo "installing the carried onnxruntime-gpu wheel"
            "$PY" -m pip install -q --no-index --no-deps --target "$GPU_SITE" "$WORK"/ort-gpu/*.whl
            export PYTHONPATH="$GPU_SITE:$PYTHONPATH"
        elif timeout 90 "$PY" -m pip install -q --retries 0 --timeout 10 --no-deps --target "$GPU_SITE" onnxruntime-gpu; then
            echo "installed onnxruntime-gpu from a registry"
            export PYTHONPATH="$GPU_SITE:$PYTHONPATH"
        else
            echo "onnxruntime-gpu: not carried and no registry reachable from this machine; checking what the CPU wheel reports"
        fi
    fi
    timeout 240 "$PY" bench/gpu_check.py run
    ;;
*)
    echo "usage: bench/gpu_check.sh prepare|run" >&2
    exit 64
    ;;
esac
