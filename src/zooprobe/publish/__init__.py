"""Publishing a finished head-training run: its model card (`card`) and one-commit Hub push (`push`)."""
