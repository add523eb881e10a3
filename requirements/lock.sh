#!/usr/bin/env bash
# Regenerates the locks from pyproject.toml: one per torch build, each with every extra.
#
#   bash requirements/lock.sh              # keeps every pin it can, changes what pyproject.toml changed
#   bash requirements/lock.sh --upgrade    # moves every pin to the newest release allowed
#
# It runs uv (in the dev extra, so .ci/setup's .venv has it). cpu.txt takes torch's CPU build
# from requirements/torch-cpu.in: the +cpu wheel is looked up on PyTorch's CPU index, or in a
# local directory of wheels given as TORCH_CPU_WHEELS on a machine that cannot reach it.
# cuda.txt takes PyPI's torch (on Linux, the CUDA build with the CUDA runtime as wheels).
# Both are universal: environment markers let one file serve Linux and macOS and every Python
# in requires-python.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-$( [ -x .venv/bin/uv ] && echo .venv/bin/uv || echo uv)}  # the locked uv first
TORCH_CPU_WHEELS=${TORCH_CPU_WHEELS:-https://download.pytorch.org/whl/cpu/torch/}

# The Pythons requires-python allows, 3.$low to 3.$((high - 1)): the universal resolution starts at the lowest.
read -r low high < <(sed -nE 's/^requires-python = ">=3\.([0-9]+),<3\.([0-9]+)"/\1 \2/p' pyproject.toml)
common=(pyproject.toml --all-extras --universal --python-version "3.$low" --quiet
        --custom-compile-command "bash requirements/lock.sh" "$@")
"$UV" pip compile "${common[@]}" --override requirements/torch-cpu.in --find-links "$TORCH_CPU_WHEELS" \
    -o requirements/cpu.txt
"$UV" pip compile "${common[@]}" -o requirements/cuda.txt

# Every Python in requires-python must find a wheel of every pinned package, so that no user
# builds one from source: resolve cuda.txt (all of cpu.txt's packages but the +cpu torch, which
# only PyTorch's index can tell) for each, on Linux x86_64 and on macOS 14 (torch's oldest) arm64.
for python in $(seq -f "3.%g" "$low" $((high - 1))); do
    for platform in x86_64-manylinux_2_28 aarch64-apple-darwin; do
        MACOSX_DEPLOYMENT_TARGET=14.0 "$UV" pip compile --quiet --no-deps --only-binary :all: \
            --python-version "$python" --python-platform "$platform" requirements/cuda.txt -o /dev/null \
            || { echo "requirements/cuda.txt: no wheels for Python $python on $platform" >&2; exit 1; }
    done
done
echo "requirements/cpu.txt, requirements/cuda.txt written; wheels found for Python 3.$low to 3.$((high - 1)) on Linux x86_64 and macOS arm64"
