"""reidc's base layer: stdlib-only helpers every other layer may import (and that import no
other part of reidc): atomic output writes and the output-folder rules (atomic.py), the user
error classes and their one-line form (errors.py), file digests (digest.py), the modality vocabulary (modes.py: Modality, RunMode,
Placement; re-exported by compiler.ir), the version.

Importing this package loads none of its modules: each is imported by name."""
