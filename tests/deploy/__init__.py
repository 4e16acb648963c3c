"""The deployment files (Docker, Kubernetes) and the RayJob rendered from a spec."""
