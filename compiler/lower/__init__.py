"""Lowering from reidc's IR to TVM Relax, building, artifacts and the runtime (TVM lives here)."""
