"""The test suite: one sub-package per concern of the product; code the tests share is in tests.helpers
(no test file imports another: tests/architecture/test_test_imports.py)."""
