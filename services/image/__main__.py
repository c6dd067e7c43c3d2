"""`python -m services.image` runs the image service."""

from services.image.server import main

main()
