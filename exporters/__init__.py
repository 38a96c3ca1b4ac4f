"""Models leaving the project: bioimage.io packages (``bioimageio_package``, checked by
``package_checks``, opened by ``package_loader``) and exports, one format per module
(``onnx``, ``torchscript``, ``tensorrt``), all verified against PyTorch
(``verification``)."""
