"""The DNS wire format (RFC 1035, EDNS0 from RFC 6891), as much as the cluster DNS needs.

Pure encoding and decoding of messages, plus ``query``, a one-shot stub client for tests
and for debugging a running cluster DNS. Owner names are compressed; names inside record
data are written in full (RFC 2782 forbids compressing an SRV target anyway).
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
from dataclasses import dataclass, field, replace

# record types
A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT, IXFR, AXFR, ANY = (
    1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 251, 252, 255)
CLASS_IN = 1
# response codes
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5

TYPE_NAMES = {A: "A", NS: "NS", CNAME: "CNAME", SOA: "SOA", PTR: "PTR", MX: "MX", TXT: "TXT",
              AAAA: "AAAA", SRV: "SRV", OPT: "OPT", IXFR: "IXFR", AXFR: "AXFR", ANY: "ANY"}
RCODE_NAMES = {NOERROR: "NOERROR", FORMERR: "FORMERR", SERVFAIL: "SERVFAIL",
               NXDOMAIN: "NXDOMAIN", NOTIMP: "NOTIMP", REFUSED: "REFUSED"}

CLASSIC_UDP_LIMIT = 512  # RFC 1035 4.2.1, without EDNS
MAX_LABELS_FOLLOWED = 128


class WireError(ValueError):
    """A message that does not parse."""


@dataclass(frozen=True)
class Question:
    name: str  # dotted, without the final dot, case as sent
    qtype: int
    qclass: int = CLASS_IN


@dataclass(frozen=True)
class Record:
    name: str
    rtype: int
    ttl: int
    rdata: bytes
    rclass: int = CLASS_IN

    def value(self) -> str:
        """The record data in presentation form (addresses, names, SRV and SOA fields)."""
        return _present(self.rtype, self.rdata)


@dataclass(frozen=True)
class Message:
    id: int
    qr: bool = False
    opcode: int = 0
    aa: bool = False
    tc: bool = False
    rd: bool = False
    ra: bool = False
    rcode: int = NOERROR
    questions: tuple[Question, ...] = ()
    answers: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    # EDNS0: the requester's UDP payload size, None without an OPT record
    edns_udp_size: int | None = None
    raw_opt: Record | None = field(default=None, compare=False)


# ------------------------------------------------------------------------- records


def a_record(name: str, ip: str, ttl: int) -> Record:
    return Record(name, A, ttl, ipaddress.IPv4Address(ip).packed)


def aaaa_record(name: str, ip: str, ttl: int) -> Record:
    return Record(name, AAAA, ttl, ipaddress.IPv6Address(ip).packed)


def cname_record(name: str, target: str, ttl: int) -> Record:
    return Record(name, CNAME, ttl, encode_name(target))


def ns_record(name: str, target: str, ttl: int) -> Record:
    return Record(name, NS, ttl, encode_name(target))


def srv_record(name: str, priority: int, weight: int, port: int, target: str, ttl: int) -> Record:
    return Record(name, SRV, ttl, struct.pack("!HHH", priority, weight, port) + encode_name(target))


def txt_record(name: str, text: str, ttl: int) -> Record:
    data = text.encode()
    return Record(name, TXT, ttl, bytes([len(data)]) + data)


def soa_record(zone: str, mname: str, rname: str, serial: int, refresh: int, retry: int,
               expire: int, minimum: int, ttl: int) -> Record:
    return Record(zone, SOA, ttl, encode_name(mname) + encode_name(rname) + struct.pack(
        "!IIIII", serial & 0xFFFFFFFF, refresh, retry, expire, minimum))


# ------------------------------------------------------------------------ encoding


def labels_of(name: str) -> list[str]:
    return [label for label in name.rstrip(".").split(".") if label] if name not in ("", ".") else []


def encode_name(name: str, offsets: dict[tuple[str, ...], int] | None = None,
                position: int = 0) -> bytes:
    """A name as labels; with ``offsets``, suffixes written before are pointed to and new
    suffixes are recorded (message compression, RFC 1035 4.1.4)."""
    labels = labels_of(name)
    out = bytearray()
    for i in range(len(labels)):
        suffix = tuple(label.lower() for label in labels[i:])
        if offsets is not None and suffix in offsets:
            out += struct.pack("!H", 0xC000 | offsets[suffix])
            return bytes(out)
        if offsets is not None and position + len(out) < 0x4000:
            offsets[suffix] = position + len(out)
        raw = labels[i].encode()
        if not 0 < len(raw) < 64:
            raise WireError(f"label {labels[i]!r} of {name!r} is not 1 to 63 octets")
        out += bytes([len(raw)]) + raw
    out += b"\x00"
    return bytes(out)


def _flags(m: Message) -> int:
    return ((int(m.qr) << 15) | ((m.opcode & 0xF) << 11) | (int(m.aa) << 10) | (int(m.tc) << 9)
            | (int(m.rd) << 8) | (int(m.ra) << 7) | (m.rcode & 0xF))


def _encode(m: Message, opt: Record | None) -> bytes:
    additional = (*m.additional, opt) if opt is not None else m.additional
    out = bytearray(struct.pack("!HHHHHH", m.id, _flags(m), len(m.questions), len(m.answers),
                                len(m.authority), len(additional)))
    offsets: dict[tuple[str, ...], int] = {}
    for q in m.questions:
        out += encode_name(q.name, offsets, len(out)) + struct.pack("!HH", q.qtype, q.qclass)
    for r in (*m.answers, *m.authority, *additional):
        name = b"\x00" if r.rtype == OPT else encode_name(r.name, offsets, len(out))
        out += name + struct.pack("!HHIH", r.rtype, r.rclass, r.ttl & 0xFFFFFFFF, len(r.rdata))
        out += r.rdata
    return bytes(out)


def encode_message(m: Message, limit: int | None = None) -> bytes:
    """The message on the wire. With ``limit`` (a UDP payload size), records that do not
    fit are left out and TC is set, so that the client asks again over TCP; the OPT
    record is kept (RFC 6891 7)."""
    opt = None
    if m.edns_udp_size is not None:
        # OPT: owner root, class = our UDP payload size, TTL = extended rcode/version/flags
        opt = Record("", OPT, 0, b"", rclass=max(m.edns_udp_size, CLASSIC_UDP_LIMIT))
    data = _encode(m, opt)
    if limit is None or len(data) <= limit:
        return data
    trimmed = replace(m, additional=(), authority=())
    answers = list(m.answers)
    while answers and len(_encode(replace(trimmed, answers=tuple(answers)), opt)) > limit:
        answers.pop()
    return _encode(replace(trimmed, answers=tuple(answers), tc=True), opt)


# ------------------------------------------------------------------------ decoding


def _read_name(data: bytes, pos: int) -> tuple[str, int]:
    labels: list[str] = []
    end = None
    followed = 0
    while True:
        if pos >= len(data):
            raise WireError("name runs past the end of the message")
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(data):
                raise WireError("truncated compression pointer")
            if end is None:
                end = pos + 2
            followed += 1
            if followed > MAX_LABELS_FOLLOWED:
                raise WireError("compression pointer loop")
            pos = ((length & 0x3F) << 8) | data[pos + 1]
            continue
        if length & 0xC0:
            raise WireError(f"unsupported label type {length:#x}")
        pos += 1
        if length == 0:
            break
        if pos + length > len(data):
            raise WireError("label runs past the end of the message")
        labels.append(data[pos:pos + length].decode("ascii", errors="replace"))
        pos += length
    return ".".join(labels), (end if end is not None else pos)


def decode_message(data: bytes) -> Message:
    if len(data) < 12:
        raise WireError("message shorter than its header")
    ident, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", data[:12])
    pos = 12
    questions = []
    for _ in range(qd):
        name, pos = _read_name(data, pos)
        if pos + 4 > len(data):
            raise WireError("truncated question")
        qtype, qclass = struct.unpack("!HH", data[pos:pos + 4])
        pos += 4
        questions.append(Question(name, qtype, qclass))
    sections: list[list[Record]] = [[], [], []]
    for section, count in zip(sections, (an, ns, ar), strict=True):
        for _ in range(count):
            name, pos = _read_name(data, pos)
            if pos + 10 > len(data):
                raise WireError("truncated resource record")
            rtype, rclass, ttl, length = struct.unpack("!HHIH", data[pos:pos + 10])
            pos += 10
            if pos + length > len(data):
                raise WireError("resource record data runs past the end of the message")
            rdata = _expand_rdata(data, rtype, pos, length)
            section.append(Record(name, rtype, ttl, rdata, rclass))
            pos += length
    opt = next((r for r in sections[2] if r.rtype == OPT), None)
    return Message(
        id=ident, qr=bool(flags >> 15), opcode=(flags >> 11) & 0xF, aa=bool(flags & 0x400),
        tc=bool(flags & 0x200), rd=bool(flags & 0x100), ra=bool(flags & 0x80), rcode=flags & 0xF,
        questions=tuple(questions), answers=tuple(sections[0]), authority=tuple(sections[1]),
        additional=tuple(r for r in sections[2] if r.rtype != OPT),
        edns_udp_size=opt.rclass if opt is not None else None, raw_opt=opt,
    )


def _expand_rdata(data: bytes, rtype: int, pos: int, length: int) -> bytes:
    """Record data with compressed names written out, so it stands on its own."""
    if rtype in (CNAME, NS, PTR):
        name, _ = _read_name(data, pos)
        return encode_name(name)
    if rtype == SRV:
        target, _ = _read_name(data, pos + 6)
        return data[pos:pos + 6] + encode_name(target)
    if rtype == SOA:
        mname, p = _read_name(data, pos)
        rname, p = _read_name(data, p)
        return encode_name(mname) + encode_name(rname) + data[p:p + 20]
    return data[pos:pos + length]


def _present(rtype: int, rdata: bytes) -> str:
    if rtype == A:
        return str(ipaddress.IPv4Address(rdata))
    if rtype == AAAA:
        return str(ipaddress.IPv6Address(rdata))
    if rtype in (CNAME, NS, PTR):
        return _read_name(rdata, 0)[0] + "."
    if rtype == SRV:
        priority, weight, port = struct.unpack("!HHH", rdata[:6])
        return f"{priority} {weight} {port} {_read_name(rdata, 6)[0]}."
    if rtype == SOA:
        mname, p = _read_name(rdata, 0)
        rname, p = _read_name(rdata, p)
        numbers = struct.unpack("!IIIII", rdata[p:p + 20])
        return f"{mname}. {rname}. " + " ".join(str(n) for n in numbers)
    if rtype == TXT:
        texts, p = [], 0
        while p < len(rdata):
            texts.append(rdata[p + 1:p + 1 + rdata[p]].decode(errors="replace"))
            p += 1 + rdata[p]
        return " ".join(f'"{t}"' for t in texts)
    return rdata.hex()


# -------------------------------------------------------------------------- client


def query(server: tuple[str, int], name: str, qtype: int = A, *, tcp: bool = False,
          edns_udp_size: int | None = None, timeout: float = 2.0) -> Message:
    """Ask ``server`` one question (recursion desired, as stub resolvers ask) and return
    the decoded answer."""
    ident = random.randrange(1 << 16)
    data = encode_message(Message(id=ident, rd=True, questions=(Question(name, qtype),),
                                  edns_udp_size=edns_udp_size))
    if tcp:
        with socket.create_connection(server, timeout=timeout) as sock:
            sock.sendall(struct.pack("!H", len(data)) + data)
            length = struct.unpack("!H", _recv_exactly(sock, 2))[0]
            reply = decode_message(_recv_exactly(sock, length))
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(data, server)
            while True:
                raw, _ = sock.recvfrom(65535)
                reply = decode_message(raw)
                if reply.id == ident:
                    break
    return reply


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise WireError("connection closed in the middle of a message")
        out += chunk
    return bytes(out)
