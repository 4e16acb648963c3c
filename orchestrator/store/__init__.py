"""The results store and everything kept in it: commits, views, scans, compaction, health checks, leases, artifacts, logs, plan manifests."""
