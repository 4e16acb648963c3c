"""A registry of named descriptors (the models', the datasets'): one table per kind of thing, torch-free."""
from __future__ import annotations

from typing import Generic, TypeVar

D = TypeVar("D")


class DescriptorTable(Generic[D]):
    """Descriptors by their `name`, in registration order (the built-in ones register first, on import).
    `what` names the kind of thing in errors ("model", "dataset")."""

    def __init__(self, what: str):
        self.what = what
        self._by_name: dict[str, D] = {}

    def register(self, descriptor: D) -> D:
        """Add a descriptor; a name already taken is refused."""
        if descriptor.name in self._by_name:
            raise ValueError(f"{self.what} {descriptor.name!r} is already registered; choose another name")
        self._by_name[descriptor.name] = descriptor
        return descriptor

    def remove(self, name: str) -> None:
        """Take a plugin's descriptor out (the driver, before it activates another spec's plugins)."""
        self._by_name.pop(name, None)

    def get(self, name: str) -> D:
        if name not in self._by_name:
            raise ValueError(f"unknown {self.what} {name!r}; known: {', '.join(self._by_name)}")
        return self._by_name[name]

    def names(self) -> tuple[str, ...]:
        """The registered names, built-in ones first, in registration order."""
        return tuple(self._by_name)
