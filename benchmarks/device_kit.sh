#!/usr/bin/env bash
# Wheels that the lent GPU machine lacks, for benchmarks/gpu_session.sh (run here, once per
# clone; needs the package registry, which that machine cannot reach).
#
# The machine's image has Python 3.12 with torch (CUDA), numpy, scipy, tifffile, typer, rich,
# matplotlib and pytest, but not pydantic (and its three helpers) or psfmodels. psfmodels has
# no cp312 wheel on the registry, so it is built here from its sdist with a Python 3.12
# interpreter (PY312, default: the first python3.12 found, pyenv's included).
#
#     bash benchmarks/device_kit.sh            # -> .device-wheels/ (git-ignored, ~3 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
out=.device-wheels
rm -rf "$out" && mkdir -p "$out"
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$out" \
    pydantic==2.13.5 pydantic-core==2.46.5 annotated-types==0.8.0 \
    typing-inspection==0.4.5 typing-extensions==4.16.0
py312=${PY312:-}
if [ -z "$py312" ]; then
    for candidate in "$HOME"/.pyenv/versions/3.12*/bin/python3.12 "$(command -v python3.12)"; do
        if [ -x "$candidate" ] && "$candidate" -c "" 2>/dev/null; then py312=$candidate; break; fi
    done
fi
if [ -z "$py312" ]; then
    echo "device_kit: no Python 3.12 here to build psfmodels for the GPU machine; set PY312" >&2
    exit 2
fi
"$py312" -m pip wheel --quiet --disable-pip-version-check --no-deps psfmodels==0.3.3 -w "$out"
ls -1 "$out"
