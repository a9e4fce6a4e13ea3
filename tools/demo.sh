#!/usr/bin/env bash
# The main job on the bundled sample: install, encode, decode with the reference
# decoder, and report bpp and PSNR.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
python tools/run_sample.py "$@"
