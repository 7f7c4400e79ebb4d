"""IR passes, one per file, run in the explicit per-mode pipeline of `pipeline.py`."""
