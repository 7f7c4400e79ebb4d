"""reidc compiler: graph IR, passes, lowering to TVM, artifacts, verification, CLI."""
