"""Rebal common library: the tree schema, the pure core (`rebal.core`) and the `rebal` CLI."""

__version__ = "0.1.0"
