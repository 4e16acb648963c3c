"""A researcher's own criterion, model and dataset, entering a ticketsweep comparison as plugins.

Each module registers one thing; the spec imports them by name (`plugins:`), so each has its own identity
in the store's keys: editing criterion.py runs again only the stages that score with it.
"""
