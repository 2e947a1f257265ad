"""The DVC stage scripts: one thin module per stage of dvc.yaml."""
