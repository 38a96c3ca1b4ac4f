"""Exporters to ONNX, TorchScript and TensorRT, one module per format (packaging issue)."""
