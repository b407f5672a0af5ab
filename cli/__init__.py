"""Command-line entry points: ``qaft`` (PyTorch side) and ``qaft-run`` (runtime)."""
