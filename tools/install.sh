#!/usr/bin/env bash
# Install coolchic-ref with the encoder, anchors and cluster extras and the test tools into the
# current Python.
# torch is pinned first to the CPU build this project is tested with; asking pip for an
# unpinned torch could pull a multi-gigabyte CUDA build instead.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
python -m pip install --quiet --disable-pip-version-check -e '.[encoder,anchors,cluster,dev]'
