"""Data the workers read, fetched on the driver side (no torch): `orchestrate data fetch`."""
