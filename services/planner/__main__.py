"""`python -m services.planner`: run the planner service."""

from servicekit import run_service
from services.planner.app import NAME, build

run_service(NAME, build)
