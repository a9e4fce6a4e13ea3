"""`python -m coolchic_ref` runs the `coolchic-ref` command line."""

from .cli import main

main(prog_name="coolchic-ref")
