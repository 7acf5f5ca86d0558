"""Console tools: rule generation, the control client, the server-list tracker."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorCore


def react_main(
    parse_args: Callable[[list[str]], argparse.Namespace],
    work: Callable[[IReactorCore, argparse.Namespace], Awaitable[int]],
    argv: list[str] | None,
) -> None:
    """Parse the command line, run ``work`` on the reactor, exit with the code it returns."""
    args = parse_args(sys.argv[1:] if argv is None else argv)

    async def run(reactor: IReactorCore) -> None:
        raise SystemExit(await work(reactor, args))

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
