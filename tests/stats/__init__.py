"""The paired statistics and stopping rules, proven on simulated sweeps with known answers."""
