"""`python -m services.audit`: run the audit service."""

from servicekit import run_service
from services.audit.app import NAME, build

run_service(NAME, build)
