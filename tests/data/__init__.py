"""Datasets: loaders, their content in stage keys, and fetching them."""
