"""The pruning methods on tiny networks with hand-computed answers, and their packages."""
