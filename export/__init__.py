"""qaft export: ONNX graphs and model folders for the runtime (see the runtime issue)."""
