"""Execution of zoo models on files (and, later, tiled and distributed)."""
