"""Network graphs that import only torch: each file is copied verbatim into bioimage.io
packages as the architecture of their ``pytorch_state_dict`` weights."""
