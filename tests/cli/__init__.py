"""What the terminal says: watching a sweep, and the checks `orchestrate` makes before it runs anything."""
