"""A name -> entry registry for models and methods: a name is registered once, and an
unknown name answers with the closest known ones and the whole list."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

from sentisweep.exit_codes import BadInput

Entry = TypeVar("Entry")


class UnknownNameError(BadInput):
    """A registry lookup failed; the message suggests and lists the known names."""


class Registry(Generic[Entry]):
    def __init__(self, kind: str):
        self.kind = kind  # "model", "method": how messages name an entry
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, entry: Entry) -> Entry:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered already")
        self._entries[name] = entry
        return entry

    def unknown(self, name: str, field: str | None = None) -> str:
        """The message for a name that is not registered: field = value, did you mean, known."""
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.6)
        hint = f" did you mean {' or '.join(map(repr, close))}?" if close else ""
        return f"{field or self.kind} = {name!r}: unknown;{hint} known: {', '.join(sorted(self._entries))}"

    def get(self, name: str, field: str | None = None) -> Entry:
        if name not in self._entries:
            raise UnknownNameError(self.unknown(name, field))
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> Entry:
        return self.get(name)

    def items(self):
        return self._entries.items()

    def values(self):
        return self._entries.values()
