"""`python -m services.script` runs the script service."""

from services.script.server import main

main()
