"""The `tidegate` command line: set-up, clients, approvers, security and ops."""
