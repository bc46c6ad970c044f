"""The `rebal` command line: the operators' tool, above the services and the shared library."""

# The distribution's version (`rebal --version` prints it without reading the package metadata, which
# took a quarter of the start; tests/cli/test_start.py keeps it equal to pyproject.toml's).
__version__ = "0.1.0"
