"""The NFQUEUE netlink messages, checked byte by byte against the kernel's layouts
(``linux/netlink.h``, ``linux/netfilter/nfnetlink.h``, ``nfnetlink_queue.h``)."""

import struct

from twisted.trial.unittest import SynchronousTestCase

from p2pwall import netlink


def read(data: bytes, parser: netlink.PacketParser | None = None, size: int | None = None):
    """What the parser finds, with the packet's bytes in place of its offsets."""
    size = len(data) if size is None else size
    found = (parser or netlink.PacketParser()).parse(data, size)
    if found is None:
        return None
    packet_id, hook, start, end, hw_at, _indev_at = found
    return packet_id, hook, data[start:end], netlink.hwaddr(data, hw_at)


def nlmsghdr(length: int, kind: int, flags: int, seq: int = 0) -> bytes:
    return struct.pack("<IHHII", length, kind, flags, seq, 0)


class EncodingTests(SynchronousTestCase):
    def test_drop_verdict(self) -> None:
        expected = (
            nlmsghdr(32, 0x0301, 0x0001)
            + bytes.fromhex("00 00 0005")  # nfgenmsg: AF_UNSPEC, v0, queue 5 (big endian)
            + bytes.fromhex("0c00 0200")  # nlattr: length 12, NFQA_VERDICT_HDR
            + bytes.fromhex("00000000 00000007")  # NF_DROP, packet id 7
        )
        self.assertEqual(netlink.verdicts(5, [7], None), expected)

    def test_drops_come_before_the_batch_accept(self) -> None:
        data = netlink.verdicts(5, [7, 9], 10)
        self.assertEqual(
            list(netlink.verdicts_in(data)),
            [
                (netlink.MSG_VERDICT, 0, 7),
                (netlink.MSG_VERDICT, 0, 9),
                (netlink.MSG_VERDICT_BATCH, 1, 10),
            ],
        )
        self.assertEqual(data[-28:-24], struct.pack("<HH", 0x0303, 1))  # batch type, request

    def test_nothing_to_say_is_no_bytes(self) -> None:
        self.assertEqual(netlink.verdicts(5, [], None), b"")

    def test_bind_and_set_up_in_one_acked_config_message(self) -> None:
        data = netlink.config(
            3, netlink.CMD_BIND, copy_range=0xFFFF, max_len=4096, fail_open=True, seq=1
        )
        attributes = (
            bytes.fromhex("0800 0100 01 00 0000")  # CMD: bind, pad, pf 0
            + bytes.fromhex("0900 0200 0000ffff 02 000000")  # PARAMS: range, copy packet, pad
            + bytes.fromhex("0800 0300 00001000")  # QUEUE_MAXLEN 4096
            + bytes.fromhex("0800 0500 00000001")  # FLAGS: fail open
            + bytes.fromhex("0800 0400 00000001")  # MASK: fail open
        )
        self.assertEqual(
            data, nlmsghdr(20 + len(attributes), 0x0302, 0x0005, 1) + b"\0\0\0\3" + attributes
        )

    def test_config_leaves_out_what_is_not_asked(self) -> None:
        self.assertEqual(
            netlink.config(3, netlink.CMD_BIND),
            nlmsghdr(28, 0x0302, 0x0005) + b"\0\0\0\3" + bytes.fromhex("0800 0100 01 00 0000"),
        )


class DecodingTests(SynchronousTestCase):
    def kernel_packet(self, payload: bytes) -> bytes:
        """A packet message laid out as the kernel builds it for FORWARD: the packet header,
        interface indexes, the MAC, a timestamp, then the payload last."""
        attributes = (
            bytes.fromhex("0b00 0100 0000002a 0800 02 00")  # PACKET_HDR: id 42, IPv4, hook 2
            + bytes.fromhex("0800 0500 00000003")  # IFINDEX_INDEV 3
            + bytes.fromhex("0800 0600 00000004")  # IFINDEX_OUTDEV 4
            + bytes.fromhex("1000 0900 0006 0000 020000000007 0000")  # HWADDR, 6 bytes
            + bytes.fromhex("1400 0400") + bytes(16)  # TIMESTAMP
            + struct.pack("<HH", 4 + len(payload), 10) + payload + b"\0" * (-len(payload) % 4)
        )  # fmt: skip
        return nlmsghdr(20 + len(attributes), 0x0300, 0) + b"\0\0\0\3" + attributes

    def test_a_kernel_packet_message(self) -> None:
        payload = bytes(range(45))
        data = self.kernel_packet(payload)
        self.assertEqual(
            read(data),
            (42, 2, payload, b"\x02\x00\x00\x00\x00\x07"),
        )

    def test_the_input_interface_is_found_in_a_walk_and_in_a_remembered_layout(self) -> None:
        parser = netlink.PacketParser()
        for payload in (b"first", b"second, read through the remembered layout"):
            data = self.kernel_packet(payload)
            indev_at = parser.parse(data, len(data))[5]
            self.assertEqual(netlink.ifindex(data, indev_at), 3)

    def test_no_input_interface_reads_as_zero(self) -> None:
        for indev in (0, 12):
            data = netlink.packet_message(3, 7, 2, b"payload", indev=indev)
            indev_at = netlink.PacketParser().parse(data, len(data))[5]
            self.assertEqual(netlink.ifindex(data, indev_at), indev)

    def test_the_fakes_packet_message_reads_back(self) -> None:
        data = netlink.packet_message(3, 7, 1, b"abcde")
        self.assertEqual(read(data), (7, 1, b"abcde", None))

    def test_a_packet_message_without_payload_has_empty_data(self) -> None:
        """Copy mode META, the kernel's default before the config takes effect."""
        data = (
            nlmsghdr(32, 0x0300, 0) + b"\0\0\0\3" + bytes.fromhex("0b00 0100 00000001 0800 01 00")
        )
        self.assertEqual(read(data), (1, 1, b"", None))

    def test_cut_messages_and_attributes_raise_value_error(self) -> None:
        data = self.kernel_packet(b"x" * 40)
        with self.assertRaises(ValueError):
            list(netlink.messages(data, len(data) - 8))
        with self.assertRaises(ValueError):
            read(data, size=len(data) - 8)

    def test_a_datagram_with_two_messages(self) -> None:
        first = netlink.packet_message(3, 1, 1, b"abc")  # padded to a multiple of 4
        second = netlink.packet_message(3, 2, 1, b"de")
        data = first + second
        self.assertEqual(
            list(netlink.messages(data, len(data))),
            [
                (netlink.MSG_PACKET, 0, len(first)),
                (netlink.MSG_PACKET, len(first), len(data)),
            ],
        )

    def test_error_report_and_ack(self) -> None:
        for code in (0, 16):
            data = nlmsghdr(36, netlink.NLMSG_ERROR, 0, 9) + struct.pack("<i", -code) + bytes(16)
            self.assertEqual(
                (netlink.error_code(data, 0, 36), netlink.message_seq(data, 0)), (code, 9)
            )
            self.assertEqual(netlink.message_type(data), netlink.NLMSG_ERROR)
            self.assertIsNone(read(data))
        self.assertRaises(ValueError, netlink.error_code, nlmsghdr(16, 2, 0), 0, 16)
        self.assertIsNone(netlink.message_type(b"short"))

    def test_error_text_for_any_number(self) -> None:
        self.assertEqual(netlink.error_text(2), "No such file or directory")
        self.assertEqual(netlink.error_text(2**40), f"error {2**40}")

    def test_packet_id_of_a_message_cut_after_its_header(self) -> None:
        data = netlink.packet_message(3, 77, 2, b"payload")
        self.assertEqual(netlink.packet_id(data, 32), 77)
        self.assertIsNone(netlink.packet_id(data, 30))
        self.assertIsNone(netlink.packet_id(nlmsghdr(36, 2, 0) + bytes(20), 36))

    def test_too_short_for_a_packet_header(self) -> None:
        with self.assertRaises(ValueError):
            read(nlmsghdr(16, 0x0300, 0))


class LayoutTests(SynchronousTestCase):
    """The parser remembers the last layout; whatever comes next, it answers as a walk."""

    def message(self, packet_id: int, payload: bytes, extra: bytes = b"") -> bytes:
        header = netlink.attribute(
            netlink.NFQA_PACKET_HDR, struct.pack("!IHB", packet_id, 0x800, 2)
        )
        attributes = header + extra + netlink.attribute(netlink.NFQA_PAYLOAD, payload)
        return netlink.message(netlink.MSG_PACKET, 0, attributes)

    def test_layouts_change_and_come_back(self) -> None:
        parser = netlink.PacketParser()
        hw = netlink.attribute(netlink.NFQA_HWADDR, bytes.fromhex("0006 0000 020000000009 0000"))
        stamp = netlink.attribute(4, bytes(16))
        mac = b"\x02\x00\x00\x00\x00\x09"
        # After a layout with a timestamp, one without: the payload's first bytes sit where
        # the old payload header was, and are made to look like one (length 8, type 10).
        trap = struct.pack("=HH", 8, netlink.NFQA_PAYLOAD) + b"evil" + b"rest of it"
        cases = [
            (self.message(1, b"first", hw + stamp), (1, 2, b"first", mac)),
            (self.message(2, b"second!", hw + stamp), (2, 2, b"second!", mac)),
            (self.message(3, b"x" * 20 + trap, hw), (3, 2, b"x" * 20 + trap, mac)),
            (self.message(4, trap, hw), (4, 2, trap, mac)),
            (self.message(5, b"plain"), (5, 2, b"plain", None)),
            (self.message(6, b"stamped" * 3, hw + stamp), (6, 2, b"stamped" * 3, mac)),
        ]
        for data, expected in cases:
            self.assertEqual(read(data, parser), expected)
            self.assertEqual(read(data), expected)

    def test_a_remembered_layout_does_not_hide_a_cut_message(self) -> None:
        parser = netlink.PacketParser()
        data = self.message(1, b"a whole payload")
        read(data, parser)
        with self.assertRaises(ValueError):
            read(data, parser, len(data) - 4)


class KernelLayoutTests(SynchronousTestCase):
    """The named sizes and offsets against messages written out byte by byte, as the kernel's
    layout rules build them (``NLMSG_ALIGN``, ``NLA_ALIGN``, ``nfqnl_msg_packet_hdr`` packed,
    ``nfqnl_msg_packet_hw``)."""

    def test_attributes_are_padded_to_four_bytes(self) -> None:
        self.assertEqual(
            netlink.attribute(7, b"abcde"), bytes.fromhex("0900 0700 6162636465 000000")
        )
        self.assertEqual(netlink.attribute(7, b"abcd"), bytes.fromhex("0800 0700 61626364"))
        self.assertEqual(netlink.attribute(7, b""), bytes.fromhex("0400 0700"))

    def test_the_next_message_starts_on_a_four_byte_boundary(self) -> None:
        # 25 bytes of message, 3 of padding: the next starts at 28 (not 25, nor 32).
        first = nlmsghdr(25, netlink.NLMSG_ERROR, 0) + bytes(9) + bytes(3)
        second = nlmsghdr(20, netlink.NLMSG_ERROR, 0) + bytes(4)
        data = first + second
        self.assertEqual(
            list(netlink.messages(data, len(data))),
            [(netlink.NLMSG_ERROR, 0, 25), (netlink.NLMSG_ERROR, 28, 48)],
        )

    def test_attributes_after_an_odd_length_one_start_on_a_four_byte_boundary(self) -> None:
        # The 7-byte packet header (length 11) is followed by one byte of padding; a 5-byte
        # attribute of an unknown type by three; the payload comes after them.
        attributes = (
            bytes.fromhex("0b00 0100 00000005 0800 03 00")
            + bytes.fromhex("0900 1000 0102030405 000000")
            + bytes.fromhex("0700 0a00 414243 00")
        )  # fmt: skip
        data = nlmsghdr(20 + len(attributes), 0x0300, 0) + b"\0\0\0\0" + attributes
        self.assertEqual(read(data), (5, 3, b"ABC", None))

    def test_the_shortest_packet_message_is_32_bytes(self) -> None:
        """16 (nlmsghdr) + 4 (nfgenmsg) + 4 (nlattr) + 7 (the packed packet header) + 1 pad."""
        data = nlmsghdr(32, 0x0300, 0) + bytes.fromhex("00 00 0003 0b00 0100 0000002a 0800 02 00")
        self.assertEqual(len(data), 32)
        self.assertEqual(netlink.packet_id(data, 32), 42)
        self.assertEqual(read(data), (42, 2, b"", None))
        self.assertIsNone(netlink.packet_id(data, 31))
        short_header = nlmsghdr(32, 0x0300, 0) + bytes.fromhex("0000 0003 0a00 0100") + bytes(8)
        self.assertIsNone(netlink.packet_id(short_header, 32))

    def test_the_hardware_address_follows_its_length_and_two_pad_bytes(self) -> None:
        """``nfqnl_msg_packet_hw``: hw_addrlen (2), _pad (2), hw_addr[8]; the pad bytes are
        made non-zero here, so an address read from the wrong offset would show them."""
        cases = [
            ("0006 abcd 020000000007 eeee", b"\x02\x00\x00\x00\x00\x07"),
            ("0008 abcd 0011223344556677", bytes.fromhex("0011223344556677")),
            ("0014 abcd 0011223344556677", bytes.fromhex("0011223344556677")),  # 20 claimed
        ]
        for fields, expected in cases:
            attributes = (
                bytes.fromhex("0b00 0100 00000001 0800 02 00")
                + bytes.fromhex("1000 0900" + fields)
                + netlink.attribute(netlink.NFQA_PAYLOAD, b"p")
            )
            data = nlmsghdr(20 + len(attributes), 0x0300, 0) + b"\0\0\0\0" + attributes
            self.assertEqual(read(data)[3], expected)

    def test_a_hardware_address_attribute_shorter_than_the_struct_is_ignored(self) -> None:
        attributes = (
            bytes.fromhex("0b00 0100 00000001 0800 02 00")
            + bytes.fromhex("0c00 0900 0006 0000 02000000")  # 8 of the struct's 12 bytes
            + netlink.attribute(netlink.NFQA_PAYLOAD, b"p")
        )
        data = nlmsghdr(20 + len(attributes), 0x0300, 0) + b"\0\0\0\0" + attributes
        self.assertEqual(read(data), (1, 2, b"p", None))

    def test_the_fakes_packet_message_byte_by_byte(self) -> None:
        data = netlink.packet_message(3, 42, 2, b"\x45\x00", hw=b"\x02\0\0\0\0\x07", indev=3)
        attributes = (
            bytes.fromhex("0b00 0100 0000002a 0800 02 00")  # id 42, ETH_P_IP, hook 2, pad
            + bytes.fromhex("0800 0500 00000003")  # IFINDEX_INDEV 3
            + bytes.fromhex("1000 0900 0006 0000 020000000007 0000")  # HWADDR
            + bytes.fromhex("0600 0a00 4500 0000")  # PAYLOAD, padded
        )  # fmt: skip
        self.assertEqual(data, nlmsghdr(20 + len(attributes), 0x0300, 1) + b"\0\0\0\3" + attributes)

    def test_accept_is_one_and_drop_is_zero(self) -> None:
        data = netlink.verdicts(0, [3], 10)
        self.assertEqual(data[24:32], bytes.fromhex("00000000 00000003"))  # NF_DROP, id 3
        self.assertEqual(data[-8:], bytes.fromhex("00000001 0000000a"))  # NF_ACCEPT through 10
