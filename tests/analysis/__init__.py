"""Tables, comparisons, curves and the report read from a store."""
