"""coolchic-ref: the normative integer-only decoder (NumPy + Numba, no torch)."""
