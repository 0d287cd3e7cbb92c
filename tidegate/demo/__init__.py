"""The support-triage demo: its tickets as tasks, and the run that shows every governance path."""
