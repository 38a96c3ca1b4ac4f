"""TensorRT backend: an engine built by ``deconv export``'s code path, cached per GPU and
TensorRT version (``<cache>/tensorrt/<weights>-<gpu>-<trt>-<precision>.engine``), reused
while its sidecar matches the GPU and TensorRT in use."""

from __future__ import annotations

import re

import numpy as np

from deconv.errors import DeconvError


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, source, precision: str = "fp16", max_window=None) -> None:
        from deconv.exporters.export import export_model
        from deconv.exporters.tensorrt import gpu_identity, load_engine, require_tensorrt
        from deconv.runtime.backend_onnx import cache_dir, weights_digest

        trt = require_tensorrt()
        gpu, _ = gpu_identity()
        tag = re.sub(r"[^A-Za-z0-9]+", "-", f"{gpu}-{trt.__version__}-{precision}")
        folder = cache_dir().parent / "tensorrt"
        folder.mkdir(parents=True, exist_ok=True)
        engine = folder / f"{weights_digest(source.model)}-{tag}.engine"
        if max_window is not None:
            engine = engine.with_name(engine.stem + "-" + "x".join(map(str, max_window))
                                      + ".engine")  # fmt: skip
        if not engine.exists():
            export_model(source, "tensorrt", engine, precision=precision,
                         max_shape=max_window)  # fmt: skip
        try:
            self._run = load_engine(engine)
        except DeconvError:  # stale cache entry: rebuild once
            engine.unlink(missing_ok=True)
            export_model(source, "tensorrt", engine, precision=precision, max_shape=max_window)
            self._run = load_engine(engine)
        self.precision = precision

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch)

    def describe(self) -> str:
        return f"tensorrt {self.precision}"
