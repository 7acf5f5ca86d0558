"""Pure helpers of the benchmark: parse what the tools print, compute rates, ratios and
percentiles, judge targets and render the Markdown report. No I/O, so they are unit-tested."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PROC_FIELDS = (
    "queue",
    "portid",
    "queue_total",
    "copy_mode",
    "copy_range",
    "queue_dropped",
    "user_dropped",
    "id_sequence",
)


def parse_nfqueue(text: str) -> dict[int, dict[str, int]]:
    """Rows of ``/proc/net/netfilter/nfnetlink_queue`` by queue number.

    Each row: queue, peer portid, queue_total (waiting now), copy mode, copy range,
    queue_dropped (queue full), user_dropped (netlink buffer full), id_sequence (the last
    packet id, i.e. how many packets this queue instance has seen), 1.
    """
    rows: dict[int, dict[str, int]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < len(PROC_FIELDS):
            continue
        try:
            values = [int(word) for word in words[: len(PROC_FIELDS)]]
        except ValueError:
            continue
        row = dict(zip(PROC_FIELDS, values, strict=True))
        rows[row["queue"]] = row
    return rows


def parse_kv(text: str) -> dict[str, float]:
    """``key=value`` words (the C tools' summary lines) as numbers; the last one wins."""
    found: dict[str, float] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep or not key:
            continue
        try:
            found[key] = float(value)
        except ValueError:
            continue
    return found


def parse_samples(text: str, key: str = "us") -> list[float]:
    """Every ``key=N`` line, in order (the connect tool prints one per connect)."""
    samples = []
    prefix = key + "="
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(prefix):
            try:
                samples.append(float(line[len(prefix) :]))
            except ValueError:
                continue
    return samples


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (``pct`` 0-100) of ``values``; NaN when empty."""
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be 0..100, got {pct}")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(value: float, reference: float) -> float:
    """``value / reference``; NaN when either is missing or the reference is zero."""
    if reference is None or value is None or not reference or math.isnan(reference):
        return math.nan
    return value / reference


def paired_ratios(values: Sequence[float], references: Sequence[float]) -> list[float]:
    """``values[i] / references[i]``: runs that took turns, so each pair saw the same load."""
    if len(values) != len(references):
        raise ValueError(f"{len(values)} runs against {len(references)}")
    return [ratio(value, reference) for value, reference in zip(values, references, strict=True)]


def median(values: Iterable[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


@dataclass(frozen=True)
class Target:
    """One of issue 3's targets: ``value`` against ``limit`` (``at_least`` or at most)."""

    name: str
    value: float
    limit: float
    at_least: bool
    unit: str = ""
    note: str = ""

    @property
    def passed(self) -> bool:
        if self.value is None or math.isnan(self.value):
            return False
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    @property
    def verdict(self) -> str:
        if self.value is None or math.isnan(self.value):
            return "FAIL (not measured)"
        return "PASS" if self.passed else "FAIL"

    def line(self) -> str:
        sign = ">=" if self.at_least else "<="
        return (
            f"{self.verdict:4}  {self.name}: {fmt(self.value)}{self.unit} "
            f"(target {sign} {fmt(self.limit)}{self.unit})"
        )


def fmt(value: float | int | None, digits: int = 3) -> str:
    """Numbers for humans: thousands separators for big ones, ``n/a`` for missing ones."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int) or (abs(value) >= 1000 and float(value).is_integer()):
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.{digits}f}" if abs(value) < 1 else f"{value:.2f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table; numbers go through ``fmt``."""

    def cell(value: object) -> str:
        return fmt(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else str(value)  # fmt: skip

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def splice(document: str, generated: str, begin: str, end: str) -> str:
    """Replace the text between the ``begin`` and ``end`` marker lines (kept) of ``document``;
    append both markers and the text when the document has none."""
    start = document.find(begin)
    stop = document.find(end, start + len(begin)) if start >= 0 else -1
    block = f"{begin}\n{generated.rstrip()}\n{end}"
    if start < 0 or stop < 0:
        return document.rstrip() + ("\n\n" if document.strip() else "") + block + "\n"
    return document[:start] + block + document[stop + len(end) :]


def parse_netdev(text: str) -> dict[str, dict[str, int]]:
    """``/proc/net/dev`` as {interface: {rx_bytes, rx_packets, tx_bytes, tx_packets}}."""
    found = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        words = rest.split()
        if not sep or len(words) < 16 or not words[0].isdigit():
            continue
        found[name.strip()] = {
            "rx_bytes": int(words[0]),
            "rx_packets": int(words[1]),
            "tx_bytes": int(words[8]),
            "tx_packets": int(words[9]),
        }
    return found


def parse_pid_stat(text: str) -> tuple[int, int]:
    """``(utime, stime)`` in clock ticks from ``/proc/PID/stat`` (fields 14 and 15; the
    command name, in parentheses, may hold spaces and parentheses itself)."""
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]), int(fields[12])


def parse_cpu_times(text: str) -> dict[int, tuple[int, int]]:
    """``{cpu: (busy, total)}`` jiffies from ``/proc/stat``'s ``cpuN`` lines: total is user
    through steal (guest time is already in user), idle is idle + iowait."""
    found = {}
    for line in text.splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu" or len(values) < 8:
            continue
        ticks = [int(value) for value in values[:8]]
        idle = ticks[3] + ticks[4]
        found[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return found


def cpu_busy(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]
) -> dict[int, float]:
    """Each CPU's busy fraction between two ``parse_cpu_times`` readings (NaN: no ticks)."""
    return {
        cpu: ratio(after[cpu][0] - before[cpu][0], after[cpu][1] - before[cpu][1])
        for cpu in before
        if cpu in after
    }


def per_packet_us(seconds: float, packets: float) -> float:
    """CPU ``seconds`` spread over ``packets``, in µs; NaN without packets."""
    return ratio(seconds * 1e6, packets)


# A reader's CPU at least this busy during a run was what limited the run.
SATURATED = 0.9


def bottleneck(reader_busy: float | None) -> str | None:
    """What limited a run of a reader, from its CPU's busy share: ``"reader"`` (saturated),
    ``"sender"`` (the reader had idle time, so it waited for packets), None (not measured)."""
    if reader_busy is None or math.isnan(reader_busy):
        return None
    return "reader" if reader_busy >= SATURATED else "sender"


def percent(fraction: float | None) -> str:
    """``0.934`` as ``93 %``; ``n/a`` when missing."""
    if fraction is None or math.isnan(fraction):
        return "n/a"
    return f"{fraction * 100:.0f} %"
