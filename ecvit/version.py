"""The package version: one owner, read by the package, the command line and the checkpoints."""

__version__ = "0.1.0"
