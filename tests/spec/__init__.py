"""Specs, plans and the stage keys they name."""
