"""`python -m services.approval`: run the approval service."""

from servicekit import run_service
from services.approval.app import NAME, build

run_service(NAME, build)
