"""The `scenecast` command: render or price a script, show the providers and the recorded spend, run a local stack."""
