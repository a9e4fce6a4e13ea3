"""The conformance suite's cases (as data), their edits, stream reading and features.

Used by tools/make_conformance.py (`python -m tools.make_conformance`).
"""
