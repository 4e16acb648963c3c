"""What a sweep found: the frontier, paired comparisons and their statistics, sequential decisions, curves, the report page."""
