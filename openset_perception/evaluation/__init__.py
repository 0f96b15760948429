"""Dataset evaluation and report writing."""
