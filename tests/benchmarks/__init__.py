"""The benchmark scripts' pieces that run on a CPU machine."""
