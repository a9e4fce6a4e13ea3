"""`python -m tools.fuzz`: the fuzzing harness's command line (see tools/fuzz/cli.py)."""

import sys

from tools.fuzz.cli import main

sys.exit(main())
