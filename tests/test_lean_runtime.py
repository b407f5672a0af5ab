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
