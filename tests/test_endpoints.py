"""Tests for the core's parser of host names, IP addresses and ports."""

from __future__ import annotations

from ipaddress import ip_address

from twisted.trial.unittest import SynchronousTestCase

from p2pwall.endpoints import normalize_name, parse_endpoint, parse_ip, parse_port


class ParseEndpointTests(SynchronousTestCase):
    """Which texts count as addresses (``N:``/``A:`` values, control arguments, list hosts)."""

    def test_forms(self) -> None:
        """Names, IPv4, IPv6, with and without a port."""
        self.assertEqual(parse_endpoint("Hub.Example."), ("hub.example", None))
        self.assertEqual(parse_endpoint("hub.example:7777"), ("hub.example", 7777))
        self.assertEqual(parse_endpoint("198.18.0.1"), (ip_address("198.18.0.1"), None))
        self.assertEqual(parse_endpoint("198.18.0.1:8875"), (ip_address("198.18.0.1"), 8875))
        self.assertEqual(parse_endpoint("2001:db8::1"), (ip_address("2001:db8::1"), None))
        self.assertEqual(parse_endpoint("[2001:db8::1]:99"), (ip_address("2001:db8::1"), 99))

    def test_rejects(self) -> None:
        """Display names, bad ports, mistyped IPs and odd labels are not addresses."""
        for text in (
            "",
            "My Network",
            "Napster",
            "hub.example:0",
            "hub.example:65536",
            "hub.example:http",
            "hub.example:\xb2",
            "10.1.2.300",
            "-bad.example",
            "a..example",
            "caf\xe9.example",
            "[198.18.0.1]:80",
            "fe80::1%eth0",
        ):
            self.assertIsNone(parse_endpoint(text), text)


class PartsTests(SynchronousTestCase):
    def test_normalize_name(self) -> None:
        """Case and one trailing dot do not make another name."""
        self.assertEqual(normalize_name("Hub.Example."), "hub.example")
        self.assertEqual(normalize_name("hub.example"), "hub.example")

    def test_parse_port(self) -> None:
        """1-65535 in ASCII digits, nothing else."""
        self.assertEqual([parse_port(t) for t in ("1", "8888", "65535")], [1, 8888, 65535])
        for text in ("0", "65536", "-1", "+80", " 80", "80 ", "\xb2", "", "123456"):
            self.assertIsNone(parse_port(text), text)

    def test_parse_ip(self) -> None:
        """Both families; a scoped IPv6 address names a local link, so it is not one."""
        self.assertEqual(parse_ip("198.18.0.1"), ip_address("198.18.0.1"))
        self.assertEqual(parse_ip("2001:db8::1"), ip_address("2001:db8::1"))
        for text in ("fe80::1%eth0", "198.18.0", "hub.example", ""):
            self.assertIsNone(parse_ip(text), text)
