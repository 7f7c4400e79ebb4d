"""reidc: a hardware-aware compiler for person re-identification networks (PyTorch -> TVM).

The one top-level package: its sub-packages are the repository's folders (`reidc.compiler`,
`reidc.frontend`, `reidc.kernels`, `reidc.targets`); its names are the Python API
(compiler/api): `reidc.compile`, `reidc.load`, `Artifact`, `tune`, `search`, `bench`, the
error classes. Importing it loads neither PyTorch nor the compiler."""
from .compiler.api import *  # noqa: F401,F403  (the public API, listed in __all__)
from .compiler.api import __all__, __version__  # noqa: F401
