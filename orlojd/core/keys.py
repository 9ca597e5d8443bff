"""ResourceKey: the identity of an object, (kind, namespace, name). Never the file path."""

from __future__ import annotations

from typing import NamedTuple


class ResourceKey(NamedTuple):
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> ResourceKey:
        """The key ``str(key)`` wrote: ``Kind/namespace/name`` (as stored in the queue's ``agent`` column)."""
        kind, namespace, name = text.split("/", 2)
        return cls(kind, namespace, name)

    @property
    def short(self) -> str:
        """Kind/name, with the namespace only when it is not 'default'."""
        if self.namespace == "default":
            return f"{self.kind}/{self.name}"
        return f"{self.kind}/{self.namespace}/{self.name}"
