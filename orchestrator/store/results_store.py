"""The results store: Parquet files under a local path or a pyarrow filesystem URI, one atomic commit per stage
attempt, pandas-readable views, checked reads, compaction.

`ResultsStore` is the one object the rest of the program holds; its operations live by concern:

- layout.py: every path the store may hold, and the one place paths are made;
- schemas.py: the tables' schemas, partitions and row identities;
- files.py: the filesystem under the root (`StoreFiles`): listing, atomic writes, quarantine;
- file_checks.py: why a file found in a table is not the store's own;
- scans.py: reads (`StoreReader`): scans, the commit log from footers, views, the whole-store walk;
- commits.py: the commit protocol (`CommitWriter`): a commit file, then its views;
- compaction.py: merging small files (`Compactor`), and finishing an interrupted merge.

What a store holds for a plan, and its repair, is health.py; leases, artifacts, stage logs and plan manifests
have modules of their own beside these.
"""
from __future__ import annotations

from orchestrator.store.commits import CommitWriter
from orchestrator.store.compaction import Compactor


class ResultsStore(CommitWriter, Compactor):
    """A store at `location` (created on first write): commits, reads, checks and compaction."""
