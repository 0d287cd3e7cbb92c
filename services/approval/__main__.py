"""`python -m services.approval`: run the approval service."""

from services.approval.app import main

main()
