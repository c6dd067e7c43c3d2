"""Code every scenecast service shares: bootstrap, errors, chunking, media probing, FFmpeg runs."""
