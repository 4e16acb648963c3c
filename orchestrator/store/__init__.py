"""The results store and everything kept in it: commits, views, scans, compaction, health checks, leases,
artifacts, stage logs, plan manifests (results_store.py maps its modules)."""
