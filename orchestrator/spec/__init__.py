"""What a user writes and what it means: the sweep spec, its messages, and the plan (DAG of stages, stage keys) made from it."""
