#!/usr/bin/env bash
# Re-measure every 2D quality result in benchmarks/results after the shipped 2D network
# changes: the network alone, its run-time options (flip TTA, RL consensus, RL refine) on
# held-out rings, the training classes, the sparse dots/lines checks with and without
# floor matching, and one-class filament images. RL's sweeps are reused from the current
# files (--classical-from), so only the network is recomputed. The `-equivariant` files are
# left alone: those weights are their own record.
#
#   bash benchmarks/remeasure_rln2d.sh REFINE_ITERATIONS   # the record's --rl-refine auto count
#
# About 5 minutes on 2 CPU cores (session 46).
set -euo pipefail
refine=${1:?usage: remeasure_rln2d.sh REFINE_ITERATIONS}
root=$(cd "$(dirname "$0")/.." && pwd)
results="$root/benchmarks/results"
python="$root/.venv/bin/python"
old=$(mktemp -d)
trap 'rm -rf "$old"' EXIT
cp "$results"/quality_rln2d*.json "$old"/
train=spheres,dots,lines,boxes,membranes

measure() {  # measure NAME [bench_quality options]
    local name=$1
    shift
    echo "== $name"
    "$python" "$root/benchmarks/bench_quality.py" --model rln2d.widefield-synthetic --count 4 \
        --classical-from "$old/$name.json" --json "$results/$name.json" "$@"
}

measure quality_rln2d
measure quality_rln2d_tta --tta
measure quality_rln2d_consensus --rl-consensus 200
measure quality_rln2d_tta_consensus --tta --rl-consensus 200
measure quality_rln2d_refine --rl-refine "$refine"
measure quality_rln2d_tta_refine --tta --rl-refine "$refine"
measure quality_rln2d_train_classes --structures "$train"
measure quality_rln2d_train_classes_consensus --structures "$train" --rl-consensus 200
measure quality_rln2d_train_classes_refine --structures "$train" --rl-refine "$refine"
measure quality_rln2d_dots --structures dots
measure quality_rln2d_dots_no_floor --structures dots --no-match-floor
measure quality_rln2d_lines --structures lines
measure quality_rln2d_lines_no_floor --structures lines --no-match-floor
measure quality_rln2d_filaments --structures filaments
