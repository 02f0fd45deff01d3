#!/usr/bin/env bash
# GPU check of the runtime's execution providers. Two steps, under 5 minutes together:
#
#   bench/gpu_check.sh prepare   HERE, with the project's .venv: builds a Bento of an MLP with four
#                                1024-wide layers and downloads the runtime's Python 3.12 wheels into
#                                bench/.work/gpu/ (about 20 MiB).
#   bench/gpu_check.sh run       ON THE GPU MACHINE, with bench/.work/gpu carried (no registry there):
#                                installs the carried wheels into /tmp/bento-site, makes sure an
#                                onnxruntime with CUDA is importable (onnxruntime-gpu staged in parts, see
#                                below, else `pip install onnxruntime-gpu` if a registry
#                                answers, else says so), serves the Bento with BENTO_COMPILE_DEVICE=cpu and
#                                =cuda, checks /metadata reports CUDAExecutionProvider, prints a CPU vs CUDA
#                                latency/throughput table. Exit 0 = CUDA in use, 2 = no CUDA onnxruntime, 1 = failure.
#
# With the device tool: run(command="bash bench/gpu_check.sh run", carry=["bench/.work/gpu"], timeout_s=420).
#
# The lent GPU machines have onnxruntime (CPU) and CUDA 13 libraries from pip, no registry, and a call
# carries at most 64 MiB; onnxruntime-gpu 1.31.1 (a CUDA 13 build) is a 255 MB wheel. To test CUDA for
# real, carry it in parts, one call each, back to back while the machine stays warm:
#   bench/gpu_check.sh prepare-ort-gpu          HERE: download, split into bench/.work/gpu-ort-1..6 (48 MiB each)
#   bench/gpu_check.sh stage                    THERE, once per part, carry=["bench/.work/gpu-ort-K"]
#   bench/gpu_check.sh run                      THERE, carry=["bench/.work/gpu"]: joins, checks sha256, installs
# Without the parts, `run` reports "NOT RUN" (the CPU wheel) and still checks what /metadata says.
#
# Serving tail and workers on the machine's many CPUs (bench/bench_tail.py; about 4 minutes):
#   bench/gpu_check.sh prepare && bench/gpu_check.sh prepare-tail     HERE: + the tail Bento, its request,
#                                wrk and its LuaJIT library, and uvloop's wheel, in bench/.work/gpu/tail
#   bench/gpu_check.sh tail      THERE, carry=["bench/.work/gpu"], timeout_s=420: Bento with 1, 2, 4 and 8
#                                workers vs the naive server, wrk pinned to its own quarter of the CPUs
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=bench/.work/gpu

install_runtime() {  # the carried wheels, into a folder of their own first on the path
    SITE=/tmp/bento-site
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" --upgrade "$WORK"/wheels/*.whl "$@"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
}

case "${1:-}" in
prepare)
    PY=${PY:-.venv/bin/python}
    "$PY" bench/gpu_check.py prepare
    ;;
prepare-ort-gpu)
    PY=${PY:-.venv/bin/python}
    "$PY" bench/gpu_check.py prepare-ort-gpu
    ;;
stage)
    mkdir -p /tmp/ort-gpu-parts
    found=0
    for part in bench/.work/gpu-ort-*/part-*; do
        [ -f "$part" ] || continue
        cp "$part" /tmp/ort-gpu-parts/ && found=1 && echo "staged $(basename "$part")"
    done
    [ "$found" = 1 ] || { echo "no part carried (carry bench/.work/gpu-ort-K)"; exit 1; }
    ls /tmp/ort-gpu-parts
    ;;
run)
    PY=${PY:-python3}
    [ -d "$WORK/bento" ] && [ -d "$WORK/wheels" ] || { echo "no $WORK: run 'bench/gpu_check.sh prepare' first and carry $WORK"; exit 1; }
    install_runtime
    if ! "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" 2>/dev/null; then
        GPU_SITE=/tmp/ort-gpu-site   # its own folder, first on the path: never beside the CPU onnxruntime
        if [ -d /tmp/ort-gpu-parts ] && [ -f "$WORK/ort-gpu.json" ]; then
            "$PY" bench/gpu_check.py join-ort-gpu /tmp/ort-gpu-parts /tmp/ort-gpu-wheel
        fi
        if ls /tmp/ort-gpu-wheel/*.whl >/dev/null 2>&1; then
            echo "installing the staged onnxruntime-gpu wheel"
            "$PY" -m pip install -q --no-index --no-deps --target "$GPU_SITE" /tmp/ort-gpu-wheel/*.whl
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
prepare-tail)
    PY=${PY:-.venv/bin/python}
    "$PY" bench/bench_tail.py --prepare-kit "$WORK/tail"
    "$PY" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$WORK/tail/wheels" \
        "uvloop==$("$PY" -c 'from importlib.metadata import version; print(version("uvloop"))')"
    du -sh "$WORK"
    ;;
tail)
    PY=${PY:-python3}
    KIT=$WORK/tail
    [ -d "$KIT/bento" ] && [ -d "$WORK/wheels" ] || { echo "no $KIT: run prepare and prepare-tail first and carry $WORK"; exit 1; }
    install_runtime "$KIT"/wheels/*.whl
    export LD_LIBRARY_PATH="$PWD/$KIT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    command -v taskset >/dev/null || { echo "no taskset on this machine: cannot pin"; exit 1; }
    timeout 400 "$PY" bench/bench_tail.py --bento "$KIT/bento" --body "$KIT/body.json" --wrk "$PWD/$KIT/bin/wrk" \
        --pin --workers 1 2 4 8 --http lean --concurrency 32 128 --rounds "${TAIL_ROUNDS:-3}" --duration 3
    ;;
*)
    echo "usage: bench/gpu_check.sh prepare|prepare-ort-gpu|stage|run|prepare-tail|tail" >&2
    exit 64
    ;;
esac
