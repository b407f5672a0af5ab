"""Tools around the codec core: rate-distortion evaluation, benchmarks, cluster runs,
fuzzing and synthetic test images.  The core (container, entropy, quantizers, model,
codec, backends) never imports from here."""
