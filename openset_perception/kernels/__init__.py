"""CPU kernels compiled with numba for the per-pixel stages of the node path (see each module)."""
