#!/usr/bin/env bash
# GPU check of the search, for a machine with a CUDA GPU.  Run from the repository root:
#
#     DDARTS_AUTHORS_DIR=/path/to/D-DARTS bash .ci/gpu_check.sh     # results land in $OUT (default gpu_check_out)
#
# DDARTS_AUTHORS_DIR is a clone of https://github.com/aheuillet/D-DARTS (the bench's authors' rows); without
# it the bench measures this project alone.  A machine that receives only a copy of the repository needs the
# clone inside it (in a git-ignored folder).
#
# Parts (each under its own time limit; a failing part does not stop the others; exit status 1 if any
# failed).  Budget: about 8 minutes on an H100/H200, most of it the authors' steps.
#   1. versions and the device;
#   2. the tests marked `cuda` (fp16 GradScaler path, CUDA graphs vs eager steps, CUDA infrastructure);
#   3. `search/run.py --device cuda --amp` for 2 epochs on the embedded digits (the CUDA fp16 + GradScaler
#      path end to end), the same with --cuda-graphs, and one paper-size supernet epoch (preset dd1's
#      network, digits at 32 px, 5 steps);
#   4. search/bench.py at the paper's search setting on one GPU: 8 cells, C=16, batch 72, 100 classes, 3x32x32;
#      fair, ablation and ablation-grad, fp32 and AMP, this project (eager; CUDA graphs for fair/ablation)
#      next to the authors' own step.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
failed=()

part() {  # part NAME SECONDS CMD...: run CMD with a time limit, log to $OUT/NAME.log, remember failures
    local name=$1 limit=$2; shift 2
    echo "=== $name: $*"
    local t0=$SECONDS
    timeout "$limit" "$@" > >(tee "$OUT/$name.log") 2>&1
    local rc=$?
    echo "=== $name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" -eq 0 ] || failed+=("$name($rc)")
}

# 1. what runs where
part versions 60 "$PY" -c 'import torch, sys; print(sys.version.split()[0], "torch", torch.__version__,
"cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO GPU")'

# 2. GPU-only tests (skipped on CPU; they are the only coverage of the CUDA-graph and CUDA AMP code)
part pytest_cuda 120 "$PY" -m pytest -q -rs -m cuda tests/search -p no:cacheprovider

# 3. the search itself on CUDA with fp16 AMP
RUNS="$OUT/runs"
part run_quick 90 "$PY" search/run.py --preset quick --device cuda --amp --epochs 2 --out "$RUNS" \
    --name quick-amp --no-progress --no-tensorboard --no-plots
part run_quick_graphs 90 "$PY" search/run.py --preset quick --device cuda --amp --cuda-graphs --epochs 2 \
    --out "$RUNS" --name quick-amp-graphs --no-progress --no-tensorboard --no-plots
part run_dd1_net 90 "$PY" search/run.py --preset dd1 --dataset digits --image-size 32 --device cuda --amp \
    --epochs 1 --max-steps-per-epoch 20 --out "$RUNS" --name dd1-net-amp --no-progress --no-tensorboard \
    --no-plots --no-eval

# 4. project vs authors at the paper's search setting (one JSON + table per precision)
IMPLS=(project)
[ -n "${DDARTS_AUTHORS_DIR:-}" ] && IMPLS+=(authors)
BENCH=(search/bench.py --device cuda --impl "${IMPLS[@]}" --loss fair ablation ablation-grad --batch 72 --C 16
       --cells 8 --classes 100 --steps 3 --warmup 2)
part bench_fp32 150 "$PY" "${BENCH[@]}" --json "$OUT/bench_fp32.json"
part bench_amp 150 "$PY" "${BENCH[@]}" --amp --json "$OUT/bench_amp.json"
part bench_graphs_fp32 60 "$PY" "${BENCH[@]}" --impl project --loss fair ablation --cuda-graphs --json "$OUT/bench_graphs_fp32.json"
part bench_graphs_amp 60 "$PY" "${BENCH[@]}" --impl project --loss fair ablation --cuda-graphs --amp --json "$OUT/bench_graphs_amp.json"
part bench_graphs_amp_mcb 45 "$PY" "${BENCH[@]}" --impl project --loss ablation --cuda-graphs --amp --mc-batched \
    --json "$OUT/bench_graphs_amp_mc_batched.json"

echo "failed parts: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
