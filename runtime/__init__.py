"""qaft runtime: bitstreams, entropy coding and quantizers, with NumPy only (no PyTorch)."""
