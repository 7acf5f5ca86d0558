"""A libnftables context that records the JSON batches it is given."""

from __future__ import annotations

from typing import Any


class RecordingNft:
    """``json_cmd`` keeps each batch and answers ``replies`` in order (then success);
    a ``list`` command answers ``listing`` (the kernel's JSON for the set listed)."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.replies: list[tuple[int, Any, str]] = []
        self.listing: dict[str, list[dict[str, Any]]] = {}
        self.timeout = 120

    def json_cmd(self, root: dict[str, Any]) -> tuple[int, Any, str]:
        commands = root["nftables"]
        self.batches.append(commands)
        if self.replies:
            return self.replies.pop(0)
        if len(commands) == 1 and "list" in commands[0]:
            ref = commands[0]["list"]["set"]
            entry = {**ref, "timeout": self.timeout}
            elems = self.listing.get(ref["name"])
            if elems is not None:
                entry["elem"] = elems
            return 0, {"nftables": [{"metainfo": {}}, {"set": entry}]}, ""
        return 0, "", ""

    def ops(self, batch: int = -1) -> list[tuple[str, str, Any]]:
        """(operation, set name, elements) of each command of one batch."""
        found = []
        for command in self.batches[batch]:
            ((op, body),) = command.items()
            ((kind, ref),) = body.items()
            found.append((op, ref["name"], ref.get("elem")))
        return found
