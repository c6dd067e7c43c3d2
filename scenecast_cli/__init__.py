"""The `scenecast` command: render a script through the gateway, show the configuration, run a local stack."""
