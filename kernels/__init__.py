"""reidc kernels: TE computes (pure, documented) and per-target schedules for TVM."""
