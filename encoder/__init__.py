"""coolchic-ref encoder (optional extra: torch, constriction)."""
