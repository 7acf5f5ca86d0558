"""A libnftables context that records what it is given."""

from __future__ import annotations

from typing import Any


class RecordingNft:
    """``cmd`` keeps each transaction's lines and answers ``replies`` in order (then
    success); ``json_cmd`` lists a set: ``listing`` holds its elements, ``timeout`` its
    timeout, ``missing`` the sets that are not there."""

    def __init__(self) -> None:
        self.transactions: list[list[str]] = []
        self.replies: list[tuple[int, str, str]] = []
        self.listing: dict[str, list[dict[str, Any]]] = {}
        self.missing: set[str] = set()
        self.timeout = 120
        self.listed: list[str] = []

    def cmd(self, text: str) -> tuple[int, str, str]:
        self.transactions.append(text.split("\n"))
        if self.replies:
            return self.replies.pop(0)
        return 0, "", ""

    def json_cmd(self, root: dict[str, Any]) -> tuple[int, Any, str]:
        (command,) = root["nftables"]
        ref = command["list"]["set"]
        self.listed.append(ref["name"])
        if ref["name"] in self.missing:
            return 1, "", "Error: No such file or directory\nlist set inet p2pwall"
        entry = {**ref, "timeout": self.timeout}
        elems = self.listing.get(ref["name"])
        if elems is not None:
            entry["elem"] = elems
        return 0, {"nftables": [{"metainfo": {}}, {"set": entry}]}, ""

    def lines(self, transaction: int = -1) -> list[str]:
        return self.transactions[transaction]
