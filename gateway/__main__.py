"""`python -m gateway` runs the gateway (RenderService)."""

from gateway.server import main

main()
