"""`python -m services.executor`: run the executor service."""

from services.executor.app import main

main()
