"""`python -m services.video` runs the video service."""

from services.video.server import main

main()
