"""Subcommand groups of the `tidegate` CLI, one module per group."""
