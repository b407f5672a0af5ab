"""qaft runtime: bitstreams, entropy coding and quantizers, with NumPy only (no PyTorch).

The Python API (:mod:`qaft.runtime.api`) is reachable from here: ``qr.load``,
``qr.compress``, ``qr.decompress``, ``qr.info`` and ``qr.ImageCodec``; it is imported on
first use, so that importing this package loads neither ONNX Runtime nor PyTorch."""

_API = ("ImageCodec", "compress", "decompress", "info", "load")


def __getattr__(name: str):
    if name in _API:
        from qaft.runtime import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
