"""Running models on files: ``run`` (one file, in memory), ``tiling`` (exact and blended
tiles), ``streaming`` (out of core, resumable), ``distributed`` (Dask), ``batch`` (folders
and globs), ``benchmark``, and one module per backend (``backend_torch``, ``backend_onnx``,
``backend_tensorrt``, chosen by ``backends``)."""
