"""Benchmarks, RD evaluation, BD-rate, plots, stream generators and the fuzzer.

Not part of the installed package: run the tools from the repository root, e.g.
`python -m tools.bd_rate --help` or `python -m tools.fuzz --help`.
"""
