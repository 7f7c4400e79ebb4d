"""reidc frontend: PyTorch model definitions, architecture specs, safe checkpoint I/O, capture to IR.

Knows nothing of TVM.
"""
