"""Policy: decides every proposed action with Cedar policy-as-code and alone signs what may run."""
