"""Ray clusters on real processes: private clusters, addresses, detached jobs, several nodes."""
