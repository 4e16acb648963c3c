"""The model builders."""
