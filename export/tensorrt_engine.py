"""TensorRT engines for an exported model folder, built with the TensorRT Python API.

Not run on the machines this project is built on: TensorRT is not installed there (see the
README).  Written against TensorRT 10's documented API: an ``OnnxParser`` fills the network,
one optimization profile covers the dynamic height and width, and the serialized plan is
written next to each graph as ``<graph>.engine``.
"""

from __future__ import annotations

from pathlib import Path

from qaft.runtime.errors import QaftError
from qaft.runtime.model_dir import GRAPHS

#: Image sizes the profile covers (pixels): min, typical (Kodak), max (4K; larger images
#: reach the analysis in tiles of at most 2048 + 2 x 192 pixels a side, runtime/tiling.py).
IMAGE_SHAPES = ((64, 64), (512, 768), (2432, 3840))
#: Spatial downsampling of each graph's input relative to the image.
INPUT_SCALE = {"analysis": 1, "synthesis": 16}


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def build_engines(
    model_dir: str | Path, channels: dict[str, int], fp16: bool = False
) -> list[Path]:
    """Builds one engine per graph; ``channels`` gives each graph's input channel count."""
    if not tensorrt_available():
        raise QaftError(
            "TensorRT is not installed here (pip install tensorrt on a machine "
            "with an NVIDIA GPU); the ONNX graphs still run on ONNX Runtime"
        )
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    written = []
    for name, fname in GRAPHS.items():
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        onnx_path = Path(model_dir) / fname
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise QaftError(f"{onnx_path}: TensorRT cannot parse it ({errors})")
        config = builder.create_builder_config()
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        s = INPUT_SCALE[name]
        c = channels[name]
        shapes = [(1, c, h // s, w // s) for h, w in IMAGE_SHAPES]
        profile.set_shape(network.get_input(0).name, *shapes)
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise QaftError(f"{onnx_path}: TensorRT could not build an engine")
        out = onnx_path.with_suffix(".fp16.engine" if fp16 else ".engine")
        out.write_bytes(bytes(plan))
        written.append(out)
    return written
