"""`python -m services.executor`: run the executor service."""

from servicekit import run_service
from services.executor.app import NAME, build

run_service(NAME, build)
