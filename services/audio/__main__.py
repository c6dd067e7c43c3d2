"""`python -m services.audio` runs the audio service."""

from services.audio.server import main

main()
