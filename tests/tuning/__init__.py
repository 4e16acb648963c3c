"""Tuning with Ray Tune on real processes, and its faults."""
