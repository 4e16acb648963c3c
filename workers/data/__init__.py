"""Datasets: the tensors a sweep trains on, and the files they are read from."""
