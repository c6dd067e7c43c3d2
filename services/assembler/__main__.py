"""`python -m services.assembler` runs the assembler."""

from services.assembler.server import main

main()
