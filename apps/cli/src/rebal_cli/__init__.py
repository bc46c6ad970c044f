"""The `rebal` command line: the operators' tool, above the services and the shared library."""
