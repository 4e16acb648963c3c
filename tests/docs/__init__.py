"""The README and CI say what the code does."""
