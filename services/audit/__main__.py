"""`python -m services.audit`: run the audit service."""

from services.audit.app import main

main()
