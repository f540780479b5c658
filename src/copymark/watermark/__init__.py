"""Ownership of classifiers by blind watermarks: embedding, the signed ownership kit,
verification and the attacks on that proof (see ../shared/DESIGN.md)."""
