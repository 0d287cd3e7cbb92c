"""Planner: turns a task into proposed actions, one at a time, and closes it with its cost."""
