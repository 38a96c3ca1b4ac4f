#!/usr/bin/env bash
# One lent-GPU session in one device call: install deconv, run the `gpu` tests, then train a
# run sized to the minutes given, and send everything back through $OUT.
#
# Why one call: a task gets 15 device minutes in all, and each machine start costs one or two,
# so installing, testing and training go together. Why a probe: nobody has timed a training
# step on the lent GPU yet, and a cosine schedule must know its length up front, so a short
# probe run times the step and the real run gets as many steps as the minutes allow (a run
# stopped mid-cosine by --time-limit would end at a high learning rate).
#
# Here, once per clone: bash benchmarks/device_kit.sh (wheels the machine lacks). Then the
# device tool's run, with carry [".device-wheels"], e.g. for a 6-minute 3D run:
#
#   bash benchmarks/gpu_session.sh 6 rln3d --psf runs/rln3d-widefield-wide-round3/psf.tif \
#       --set width=8 --set bp_width=16 --set h1_lateral_pool=4 --patch 32,64,64 \
#       --volume-shape 64,128,128 --train-structures spheres,dots,lines,sheets,boxes,membranes \
#       --intensity-scale 0.25,2 --ema 0.998 --lr-schedule cosine --lr 0.005 --seed 50
#
# Arguments after MINUTES are `deconv train`'s, read from zoo/weights (so runs/... paths
# work) and without -o, --steps, --device or --time-limit, which this script sets. Back in
# $OUT: session.log (with the benchmarks' tables), gpu_tests.log, bench_rln3d.json and
# bench_rl.json (BENCH=0 skips them), probe.jsonl, train.log and run.tar (the run
# directory: unpack it under zoo/weights/runs, evaluate with benchmarks/bench_quality.py
# --model RUN). Keep the call's timeout_s at MINUTES * 60 + 240 or more (install, tests,
# benchmarks, probe, validations, tar).
# A dry run on a CPU (what CI-less checking here can do): PYTHON=.venv/bin/python INSTALL=0
# DEVICE=cpu OUT=/tmp/x bash benchmarks/gpu_session.sh 1 rln2d_tiny --psf ...
set -uo pipefail
minutes=${1:?usage: gpu_session.sh MINUTES MODEL [deconv train arguments]}
shift
out=${OUT:-/tmp/gpu-session-out}
mkdir -p "$out"
repo=$(pwd)
site=/tmp/deconv-site
python=$(realpath -s "$(command -v "${PYTHON:-python3}")")
device=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1
log() { echo "[gpu_session $(date +%T)] $*" | tee -a "$out/session.log"; }

if [ "${INSTALL:-1}" = 1 ]; then
    log "installing (wheels from .device-wheels, deconv from this tree)"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" .device-wheels/*.whl || { log "wheel install failed"; exit 3; }
    "$python" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
        --no-cache-dir --target "$site" . || { log "deconv install failed"; exit 3; }
    export PYTHONPATH=$site
fi
"$python" -c "import torch, deconv; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" \
    | tee -a "$out/session.log"

log "gpu tests"
"$python" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py > "$out/gpu_tests.log" 2>&1
log "gpu tests exit code $?"

deconv() { "$python" -c "import sys; from deconv.cli import main; main(sys.argv[1:])" "$@"; }
cd "$repo/zoo/weights"
if [ "${BENCH:-1}" = 1 ]; then
    # issue 5's GPU figures: RLN voxels/s at fp16 and fp32, ms per RL iteration at 128x512x512
    log "bench: rln3d and rl at 128x512x512"
    deconv bench --model rln3d.widefield-synthetic --shape 128,512,512 --tile 64,256,256 \
        --batch-size 4 --backend torch --device "$device" --json "$out/bench_rln3d.json" \
        >> "$out/session.log" 2>&1
    deconv bench --model rl --psf runs/rln3d-widefield-wide-round3/psf.tif \
        --shape 128,512,512 --device "$device" --json "$out/bench_rl.json" \
        >> "$out/session.log" 2>&1
    log "bench exit code $?"
fi
log "probe: 60 steps"
rm -rf /tmp/probe
deconv train "$@" -o /tmp/probe --steps 60 --val-every 30 --device "$device" > "$out/train.log" 2>&1
cp /tmp/probe/metrics.jsonl "$out/probe.jsonl" 2>/dev/null
steps=$("$python" - "$minutes" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open("/tmp/probe/metrics.jsonl")]
# seconds per step between the two validations: startup and the first CUDA kernels left out
per_step = (rows[1]["seconds"] - rows[0]["seconds"]) / (rows[1]["step"] - rows[0]["step"])
budget = float(sys.argv[1]) * 60 * 0.9  # a tenth for validations and checkpoints
print(max(100, int(budget / per_step) // 100 * 100))
EOF
) || { log "probe failed: see train.log"; exit 4; }
log "training $steps steps"
rm -rf /tmp/run
deconv train "$@" -o /tmp/run --steps "$steps" --val-every $((steps / 10)) \
    --checkpoint-every $((steps / 20)) --device "$device" --time-limit $((minutes + 1)) \
    >> "$out/train.log" 2>&1
log "training exit code $?"
tar -C /tmp -cf "$out/run.tar" run
log "done"
