"""The runtime must not pull in PyTorch."""

import subprocess
import sys


def test_import_runtime_does_not_import_torch():
    code = (
        "import sys, qaft.runtime, qaft.runtime.codec, qaft.runtime.container, "
        "qaft.runtime.entropy, qaft.runtime.image; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_import_runtime_and_pillow_plugin_do_not_import_onnxruntime():
    """ONNX Runtime is loaded with the first model (the API is imported lazily): reading a
    header, or registering the Pillow plugin, does not need it."""
    code = (
        "import sys, qaft.runtime as qr, qaft.pillow; qr.info; "
        "print(sorted(m for m in ('onnxruntime', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
