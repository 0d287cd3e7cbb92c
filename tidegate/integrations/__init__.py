"""Framework adapters: each governs an existing agent's tool calls through `tidegate.client`.

Each module imports its framework, installed by the matching extra (`pip install tidegate[langgraph]`...).
"""
