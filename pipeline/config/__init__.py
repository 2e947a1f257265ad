"""Configuration: the typed, validated params.yaml (``params``, ``schema``) and presets."""
