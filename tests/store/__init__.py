"""The results store: commits, reads, compaction, faults, links, object storage, leases."""
