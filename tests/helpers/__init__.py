"""Code the tests share; never a test file."""
