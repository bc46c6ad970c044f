"""Rebal executor: executes approved plans against venues exactly once (the engine: `execution`)."""
