"""reidc's version: one definition, read by the CLI (`reidc --version`) and written into manifests."""
__version__ = "0.1.0"
