"""The `python -m spelltune.stages.<name>` entry points of dvc.yaml. Thin: each reads its
sections of params.yaml and calls the library; stages talk only through files, and no module
imports a stage."""
