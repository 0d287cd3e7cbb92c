"""`python -m services.policy`: run the policy service."""

from services.policy.app import main

main()
