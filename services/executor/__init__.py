"""Executor: performs signed, authorized tool calls exactly once."""
