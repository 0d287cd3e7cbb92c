"""`python -m services.planner`: run the planner service."""

from services.planner.app import main

main()
