"""The `reidc` command line. Thin: parses arguments and calls library functions (compiler/api).

`toplevel.py` holds the app (the error handler, --debug, --version, the script's `main`),
`common.py` what the commands share; each other module registers its commands on the app when
imported here, in the order `reidc --help` lists them."""
from . import build, tune, search, deploy, timing, zoo  # noqa: F401  (registers the commands, in this order)
from .common import err, out
from .toplevel import app, main
from .zoo import zoo_app

__all__ = ["app", "main", "zoo_app", "out", "err"]
