"""`python -m services.policy`: run the policy service."""

from servicekit import run_service
from services.policy.app import NAME, build

run_service(NAME, build)
