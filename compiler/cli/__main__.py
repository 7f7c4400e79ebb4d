"""`python -m reidc.compiler.cli`: the `reidc` script."""
import sys

from . import main

sys.exit(main())
