#!/usr/bin/env bash
# The checks a lent GPU is for, in one command: the `gpu` tests and the GPU benchmarks.
#
#   bash benchmarks/gpu_session.sh [tests] [trainer] [packing] [search]   (default: tests trainer)
#
# Logs go to $OUT (the device tool's folder) or ./gpu-out. Packages the GPU machine lacks
# travel as wheels in .whl/ (see /work/.library/device/README.md); they are installed first,
# compiled to bytecode once (else every worker process compiles their sources again).
# Each step is cut off after $STEP_TIMEOUT seconds (default 240) so the next one still runs
# within the device tool's 600 s per command; the script exits non-zero if any step failed.
set -u
out=${OUT:-gpu-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    # benchmarks/*.py and the tests' `python -m automl` children import automl from here.
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" \
    | tee "$out/device.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$out/device.txt"

failed=0
step() {
    local name=$1 code
    shift
    echo "== $name: $*"
    timeout "${STEP_TIMEOUT:-240}" "$@" >"$out/$name.log" 2>&1
    code=$?
    echo "== $name: exit $code"
    tail -n "${TAIL_LINES:-25}" "$out/$name.log"
    [ "$code" -eq 0 ] || failed=1
}

for what in "${@:-tests trainer}"; do
    for part in $what; do
        case $part in
        tests) step gpu-tests python3 -m pytest -q -p no:cacheprovider -n 0 -m gpu tests ;;
        trainer) step trainer python3 benchmarks/bench_trainer.py --device cuda --epochs 3 \
            --repeats 3 --eager ;;
        packing) step packing python3 benchmarks/bench_packing.py --device cuda --trials 64 \
            --epochs 3 --repeats 1 --slots 1 2 4 --profile ;;
        search) step search python3 benchmarks/bench_search.py --device cuda --trials 10 \
            --epochs 3 --repeats 3 --modes run ;;
        *) echo "unknown step $part (tests, trainer, packing, search)" && exit 2 ;;
        esac
    done
done
exit $failed
