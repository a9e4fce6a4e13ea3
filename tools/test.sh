#!/usr/bin/env bash
# Install everything and run the whole test suite (unit, end-to-end, conformance).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
python -m pytest -q "$@"
