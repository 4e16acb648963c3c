"""Where a sweep runs: connecting to Ray clusters, detached runs as Ray jobs, KubeRay manifests."""
