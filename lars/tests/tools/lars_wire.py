#!/usr/bin/env python3
"""lars_wire — a dependency-free (Python 3 stdlib only) codec + client for the Lars wire protocol.

Wire format (aceld/Lars, lars_reactor/include/message.h):

    +----------------+----------------+---------------------------+
    | msgid  int32   | msglen int32   | body: protobuf (proto3)   |
    | little-endian  | little-endian  | msglen bytes              |
    +----------------+----------------+---------------------------+

The C++ code memcpy()s ``struct msg_head {int msgid; int msglen;}`` so the head is in *host* byte order,
i.e. little-endian on x86-64.  MESSAGE_HEAD_LEN = 8; MESSAGE_LENGTH_LIMIT = 65535 - 8 = 65527 (a TCP peer that
sends msglen < 0 or > 65527 is disconnected; a UDP datagram must be exactly 8 + msglen bytes or it is dropped).
TCP: a byte stream of frames (lars_dns :7778, lars_reporter :7779).  UDP: exactly one frame per datagram
(lars_lb_agent :8888, :8889, :8890; a request for (modid, cmdid) must go to port 8888 + (modid + cmdid) % 3,
because the agent's dns client files the route it receives under route_lb[(modid + cmdid) % 3]).

Messages (base/proto/lars.proto, package lars, proto3):

    msgid 1 GetRouteRequest        api/agent -> dns          {int32 modid=1; int32 cmdid=2}
    msgid 2 GetRouteResponse       dns -> agent (reply+push) {int32 modid=1; int32 cmdid=2; repeated HostInfo host=3}
    msgid 3 ReportStatusRequest    agent -> reporter         {int32 modid=1; int32 cmdid=2; int32 caller=3;
                                                              repeated HostCallResult results=4; uint32 ts=5}
    msgid 4 GetHostRequest         api -> agent (UDP)        {uint32 seq=1; int32 modid=2; int32 cmdid=3}
    msgid 5 GetHostResponse        agent -> api (UDP)        {uint32 seq=1; int32 modid=2; int32 cmdid=3;
                                                              int32 retcode=4; HostInfo host=5}
    msgid 6 ReportRequest          api -> agent (UDP)        {int32 modid=1; int32 cmdid=2; HostInfo host=3; int32 retcode=4}
    msgid 7 API_GetRouteRequest    api -> agent (UDP)        body is a GetRouteRequest  (no separate message type)
    msgid 8 API_GetRouteResponse   agent -> api (UDP)        body is a GetRouteResponse (no separate message type)

    HostInfo       {int32 ip=1; int32 port=2}
    HostCallResult {int32 ip=1; int32 port=2; uint32 succ=3; uint32 err=4; bool overload=5}
    LarsRetCode    RET_SUCC=0, RET_OVERLOAD=1, RET_SYSTEM_ERROR=2, RET_NOEXIST=3

IP addresses are carried as the *host-order* 32-bit integer of the dotted quad (192.168.1.1 -> 0xC0A80101) in an
``int32`` field, so addresses >= 128.0.0.0 are negative on the wire and encode as 10-byte varints (proto int32
negative values are sign-extended to 64 bits).  This module keeps ``HostInfo.ip`` as that signed int32 (exactly
what the C++ accessor returns) and offers ``ip_u32`` / ``ip_str`` helpers.

proto3 encoding rules implemented here (matching protobuf C++ 3.x SerializeToString):
  * scalar fields equal to their default (0 / False) are omitted; fields are written in field-number order;
  * int32 uses varint of the value sign-extended to 64 bits; uint32 plain varint; bool varint 0/1;
  * singular message fields (GetHostResponse.host, ReportRequest.host) have presence: None = absent,
    HostInfo(0, 0) = present and empty (tag + zero length);
  * decoding accepts any field order, skips unknown fields (wire types 0, 1, 2, 5), applies last-one-wins for
    scalars, merges repeated occurrences of singular message fields, truncates int32/uint32 varints to 32 bits.

CLI (JSON output, exit 1 with {"error":...} on failure):
    lars_wire.py --selftest [-v]                     codec self-test incl. C++ golden vectors
    lars_wire.py dns-get-route MODID CMDID           TCP 127.0.0.1:7778, msgid 1 -> 2
    lars_wire.py dns-watch MODID CMDID --seconds S   subscribe and print pushed GetRouteResponses
    lars_wire.py report-status MODID CMDID [--ip --hport --succ --err --overload --caller]   TCP :7779, msgid 3
    lars_wire.py agent-get-host MODID CMDID [--count N] [--port P]   UDP 8888+(modid+cmdid)%3, msgid 4 -> 5
    lars_wire.py agent-get-route MODID CMDID         UDP, msgid 7 -> 8
    lars_wire.py agent-report MODID CMDID IP PORT RETCODE             UDP, msgid 6
    lars_wire.py decode HEXFRAME | encode MSGID JSON
"""
from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Iterator, List, Optional, Tuple, Type, TypeVar, Union

# --------------------------------------------------------------------------------------------- constants
MESSAGE_HEAD_LEN = 8
MESSAGE_LENGTH_LIMIT = 65535 - MESSAGE_HEAD_LEN  # 65527, max body length accepted by lars_reactor
HEAD = struct.Struct("<ii")

ID_UNKNOW = 0
ID_GetRouteRequest = 1
ID_GetRouteResponse = 2
ID_ReportStatusRequest = 3
ID_GetHostRequest = 4
ID_GetHostResponse = 5
ID_ReportRequest = 6
ID_API_GetRouteRequest = 7
ID_API_GetRouteResponse = 8

RET_SUCC = 0
RET_OVERLOAD = 1
RET_SYSTEM_ERROR = 2
RET_NOEXIST = 3
RET_NAMES = {RET_SUCC: "RET_SUCC", RET_OVERLOAD: "RET_OVERLOAD", RET_SYSTEM_ERROR: "RET_SYSTEM_ERROR",
             RET_NOEXIST: "RET_NOEXIST"}

DNS_PORT = 7778
REPORTER_PORT = 7779
AGENT_BASE_PORT = 8888

WT_VARINT, WT_I64, WT_LEN, WT_I32 = 0, 1, 2, 5

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF


class WireError(ValueError):
    """Malformed frame or protobuf body."""


# --------------------------------------------------------------------------------------------- varint / scalars
def encode_varint(value: int) -> bytes:
    """Unsigned LEB128 varint of a non-negative integer < 2**64."""
    if value < 0 or value > _U64:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_varint(buf: bytes, pos: int) -> Tuple[int, int]:
    """Return (value, new_pos).  At most 10 bytes; value truncated to 64 bits like protobuf."""
    result = 0
    shift = 0
    for i in range(10):
        if pos >= len(buf):
            raise WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result & _U64, pos
        shift += 7
    raise WireError("varint longer than 10 bytes")


def _check_int32(v: int, name: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not -(2 ** 31) <= v < 2 ** 31:
        raise ValueError(f"{name}: int32 out of range: {v!r}")
    return v


def _check_uint32(v: int, name: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= _U32:
        raise ValueError(f"{name}: uint32 out of range: {v!r}")
    return v


def to_int32(v: int) -> int:
    """Reinterpret the low 32 bits of v as a signed int32 (what a C++ int32 field holds)."""
    v &= _U32
    return v - (1 << 32) if v & 0x80000000 else v


def to_uint32(v: int) -> int:
    return v & _U32


def ip_to_int32(ip: Union[str, int]) -> int:
    """'192.168.1.1' (or its unsigned host-order integer) -> the int32 value Lars puts in HostInfo.ip."""
    if isinstance(ip, str):
        return to_int32(int(ipaddress.IPv4Address(ip)))
    return to_int32(ip)


def int_to_ip(v: int) -> str:
    """HostInfo.ip (signed or unsigned host-order integer) -> dotted quad."""
    return str(ipaddress.IPv4Address(v & _U32))


def _tag(field_no: int, wire_type: int) -> bytes:
    return encode_varint((field_no << 3) | wire_type)


def _emit_int32(out: bytearray, field_no: int, v: int) -> None:
    if v:
        out += _tag(field_no, WT_VARINT)
        out += encode_varint(v & _U64)  # negative => sign-extended 64-bit two's complement (10 bytes)


def _emit_uint32(out: bytearray, field_no: int, v: int) -> None:
    if v:
        out += _tag(field_no, WT_VARINT)
        out += encode_varint(v)


def _emit_bool(out: bytearray, field_no: int, v: bool) -> None:
    if v:
        out += _tag(field_no, WT_VARINT)
        out += b"\x01"


def _emit_msg(out: bytearray, field_no: int, body: bytes) -> None:
    out += _tag(field_no, WT_LEN)
    out += encode_varint(len(body))
    out += body


def iter_fields(buf: bytes) -> Iterator[Tuple[int, int, Union[int, bytes]]]:
    """Yield (field_no, wire_type, value) for every field; value is int for varint/fixed, bytes for LEN."""
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = decode_varint(buf, pos)
        field_no, wt = key >> 3, key & 7
        if field_no == 0:
            raise WireError("field number 0")
        if wt == WT_VARINT:
            v, pos = decode_varint(buf, pos)
            yield field_no, wt, v
        elif wt == WT_I64:
            if pos + 8 > n:
                raise WireError("truncated fixed64")
            yield field_no, wt, struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wt == WT_LEN:
            ln, pos = decode_varint(buf, pos)
            if pos + ln > n:
                raise WireError("truncated length-delimited field")
            yield field_no, wt, bytes(buf[pos:pos + ln])
            pos += ln
        elif wt == WT_I32:
            if pos + 4 > n:
                raise WireError("truncated fixed32")
            yield field_no, wt, struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise WireError(f"unsupported wire type {wt} (field {field_no})")


def _want(wt: int, expected: int, name: str) -> None:
    if wt != expected:
        raise WireError(f"{name}: wire type {wt}, expected {expected}")


# --------------------------------------------------------------------------------------------- messages
M = TypeVar("M", bound="Message")


class Message:
    """Base: subclasses implement to_bytes()/merge_from(); FIELDS documents (number, name, type)."""

    FIELDS: ClassVar[Tuple[Tuple[int, str, str], ...]] = ()

    def to_bytes(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def merge_from(self, buf: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_bytes(cls: Type[M], buf: bytes) -> M:
        m = cls()
        m.merge_from(buf)
        return m

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = dataclasses.asdict(self)  # type: ignore[call-overload]
        return d

    def validate(self) -> None:
        self.to_bytes()


@dataclass
class HostInfo(Message):
    ip: int = 0     # int32: host-order IPv4 as signed int (see ip_to_int32)
    port: int = 0   # int32
    FIELDS: ClassVar[Tuple[Tuple[int, str, str], ...]] = ((1, "ip", "int32"), (2, "port", "int32"))

    @classmethod
    def make(cls, ip: Union[str, int], port: int) -> "HostInfo":
        return cls(ip_to_int32(ip), port)

    @property
    def ip_u32(self) -> int:
        return self.ip & _U32

    @property
    def ip_str(self) -> str:
        return int_to_ip(self.ip)

    def to_bytes(self) -> bytes:
        out = bytearray()
        _emit_int32(out, 1, _check_int32(self.ip, "HostInfo.ip"))
        _emit_int32(out, 2, _check_int32(self.port, "HostInfo.port"))
        return bytes(out)

    def merge_from(self, buf: bytes) -> None:
        for f, wt, v in iter_fields(buf):
            if f == 1:
                _want(wt, WT_VARINT, "HostInfo.ip"); self.ip = to_int32(v)  # type: ignore[arg-type]
            elif f == 2:
                _want(wt, WT_VARINT, "HostInfo.port"); self.port = to_int32(v)  # type: ignore[arg-type]

    def to_dict(self) -> Dict[str, Any]:
        return {"ip": self.ip, "ip_str": self.ip_str, "port": self.port}


@dataclass
class GetRouteRequest(Message):
    modid: int = 0
    cmdid: int = 0
    FIELDS: ClassVar[Tuple[Tuple[int, str, str], ...]] = ((1, "modid", "int32"), (2, "cmdid", "int32"))

    def to_bytes(self) -> bytes:
        out = bytearray()
        _emit_int32(out, 1, _check_int32(self.modid, "modid"))
        _emit_int32(out, 2, _check_int32(self.cmdid, "cmdid"))
        return bytes(out)

    def merge_from(self, buf: bytes) -> None:
        for f, wt, v in iter_fields(buf):
            if f == 1:
                _want(wt, WT_VARINT, "modid"); self.modid = to_int32(v)  # type: ignore[arg-type]
            elif f == 2:
                _want(wt, WT_VARINT, "cmdid"); self.cmdid = to_int32(v)  # type: ignore[arg-type]


@dataclass
class GetRouteResponse(Message):
    modid: int = 0
    cmdid: int = 0
    host: List[HostInfo] = field(default_factory=list)
    FIELDS: ClassVar[Tuple[Tuple[int, str, str], ...]] = (
        (1, "modid", "int32"), (2, "cmdid", "int32"), (3, "host", "repeated HostInfo"))

    def to_bytes(self) -> bytes:
        out = bytearray()
        _emit_int32(out, 1, _check_int32(self.modid, "modid"))
        _emit_int32(out, 2, _check_int32(self.cmdid, "cmdid"))
        for h in self.host:
            _emit_msg(out, 3, h.to_bytes())
        return bytes(out)

    def merge_from(self, buf: bytes) -> None:
        for f, wt, v in iter_fields(buf):
            if f == 1:
                _want(wt, WT_VARINT, "modid"); self.modid = to_int32(v)  # type: ignore[arg-type]
            elif f == 2:
                _want(wt, WT_VARINT, "cmdid"); self.cmdid = to_int32(v)  # type: ignore[arg-type]
            elif f == 3:
                _want(wt, WT_LEN, "host"); self.host.append(HostInfo.from_bytes(v))  # type: ignore[arg-type]

    def to_dict(self) -> Dict[str, Any]:
        return {"modid": self.modid, "cmdid": self.cmdid, "host": [h.to_dict() for h in self.host]}


@dataclass
class HostCallResult(Message):
    ip: int = 0          # int32
    port: int = 0        # int32
    succ: int = 0        # uint32
    err: int = 0         # uint32
    overload: bool = False
    FIELDS: ClassVar[Tuple[Tuple[int, str, str], ...]] = (
        (1, "ip", "int32"), (2, "port", "int32"), (3, "succ", "uint32"), (4, "err", "uint32"), (5, "overload", "bool"))

    def to_bytes(self) -> bytes:
        out = bytearray()
        _emit_int32(out, 1, _check_int32(self.ip, "HostCallResult.ip"))
        _emit_int32(out, 2, _check_int32(self.port, "HostCallResult.port"))
        _emit_uint32(out, 3, _check_uint32(self.succ, "succ"))
        _emit_uint32(out, 4, _check_uint32(self.err, "err"))
        _emit_bool(out, 5, bool(self.overload))
        return bytes(out)

    def merge_from(self, buf: bytes) -> None:
        for f, wt, v in iter_fields(buf):
            if f == 1:
                _want(wt, WT_VARINT, "ip"); self.ip = to_int32(v)  # type: ignore[arg-type]
            elif f == 2:
                _want(wt, WT_VARINT, "port"); self.port = to_int32(v)  # type: ignore[arg-type]
            elif f == 3:
                _want(wt, WT_VARINT, "succ"); self.succ = to_uint32(v)  # type: ignore[arg-type]
            elif f == 4:
                _want(wt, WT_VARINT, "err"); self.err = to_uint32(v)  # type: ignore[arg-type]
            elif f == 5:
                _want(wt, WT_VARINT, "overload"); self.overload = v != 0

    def to_dict(self) -> Dict[str, Any]:
        return {"ip": self.ip, "ip_str": int_to_ip(self.ip), "port": self.port, "succ": self.succ,
                "err": self.err, "overload": self.overload}


@dataclass
class ReportStatusRequest(Message):
    modid: int = 0
    cmdid: int = 0
    caller: int = 0      # int32 (the agent puts its local IPv4 here, host order)
    results: List[HostCallResult] = field(default_factory=list)
    ts: int = 0          # uint32 unix time
    FIELDS: ClassVar[Tuple[Tuple[int, str, str], ...]] = (
        (1, "modid", "int32"), (2, "cmdid", "int32"), (3, "caller", "int32"),
        (4, "results", "repeated HostCallResult"), (5, "ts", "uint32"))

    def to_bytes(self) -> bytes:
        out = bytearray()
        _emit_int32(out, 1, _check_int32(self.modid, "modid"))
        _emit_int32(out, 2, _check_int32(self.cmdid, "cmdid"))
        _emit_int32(out, 3, _check_int32(self.caller, "caller"))
        for r in self.results:
            _emit_msg(out, 4, r.to_bytes())
        _emit_uint32(out, 5, _check_uint32(self.ts, "ts"))
        return bytes(out)

    def merge_from(self, buf: bytes) -> None:
        for f, wt, v in iter_fields(buf):
            if f == 1:
                _want(wt, WT_VARINT, "modid"); self.modid = to_int32(v)  # type: ignore[arg-type]
            elif f == 2:
                _want(wt, WT_VARINT, "cmdid"); self.cmdid = to_int32(v)  # type: ignore[arg-type]
            elif f == 3:
                _want(wt, WT_VARINT, "caller"); self.caller = to_int32(v)  # type: ignore[arg-type]
            elif f == 4:
                _want(wt, WT_LEN, "results"); self.results.append(HostCallResult.from_bytes(v))  # type: ignore[arg-type]
            elif f == 5:
                _want(wt, WT_VARINT, "ts"); self.ts = to_uint32(v)  # type: ignore[arg-type]

    def to_dict(self) -> Dict[str, Any]:
        return {"modid": self.modid, "cmdid": self.cmdid, "caller": self.caller, "caller_str": int_to_ip(self.caller),
                "results": [r.to_dict() for r in self.results], "ts": self.ts}


@dataclass
class GetHostRequest(Message):
    seq: int = 0         # uint32
    modid: int = 0
    cmdid: int = 0
    FIELDS: ClassVar[Tuple[Tuple[int, str, str], ...]] = ((1, "seq", "uint32"), (2, "modid", "int32"), (3, "cmdid", "int32"))

    def to_bytes(self) -> bytes:
        out = bytearray()
        _emit_uint32(out, 1, _check_uint32(self.seq, "seq"))
        _emit_int32(out, 2, _check_int32(self.modid, "modid"))
        _emit_int32(out, 3, _check_int32(self.cmdid, "cmdid"))
        return bytes(out)

    def merge_from(self, buf: bytes) -> None:
        for f, wt, v in iter_fields(buf):
            if f == 1:
                _want(wt, WT_VARINT, "seq"); self.seq = to_uint32(v)  # type: ignore[arg-type]
            elif f == 2:
                _want(wt, WT_VARINT, "modid"); self.modid = to_int32(v)  # type: ignore[arg-type]
            elif f == 3:
                _want(wt, WT_VARINT, "cmdid"); self.cmdid = to_int32(v)  # type: ignore[arg-type]


@dataclass
class GetHostResponse(Message):
    seq: int = 0
    modid: int = 0
    cmdid: int = 0
    retcode: int = 0
    host: Optional[HostInfo] = None   # None = field absent (e.g. RET_NOEXIST / RET_OVERLOAD replies)
    FIELDS: ClassVar[Tuple[Tuple[int, str, str], ...]] = (
        (1, "seq", "uint32"), (2, "modid", "int32"), (3, "cmdid", "int32"), (4, "retcode", "int32"), (5, "host", "HostInfo"))

    def to_bytes(self) -> bytes:
        out = bytearray()
        _emit_uint32(out, 1, _check_uint32(self.seq, "seq"))
        _emit_int32(out, 2, _check_int32(self.modid, "modid"))
        _emit_int32(out, 3, _check_int32(self.cmdid, "cmdid"))
        _emit_int32(out, 4, _check_int32(self.retcode, "retcode"))
        if self.host is not None:
            _emit_msg(out, 5, self.host.to_bytes())
        return bytes(out)

    def merge_from(self, buf: bytes) -> None:
        for f, wt, v in iter_fields(buf):
            if f == 1:
                _want(wt, WT_VARINT, "seq"); self.seq = to_uint32(v)  # type: ignore[arg-type]
            elif f == 2:
                _want(wt, WT_VARINT, "modid"); self.modid = to_int32(v)  # type: ignore[arg-type]
            elif f == 3:
                _want(wt, WT_VARINT, "cmdid"); self.cmdid = to_int32(v)  # type: ignore[arg-type]
            elif f == 4:
                _want(wt, WT_VARINT, "retcode"); self.retcode = to_int32(v)  # type: ignore[arg-type]
            elif f == 5:
                _want(wt, WT_LEN, "host")
                if self.host is None:
                    self.host = HostInfo()
                self.host.merge_from(v)  # type: ignore[arg-type]

    def to_dict(self) -> Dict[str, Any]:
        return {"seq": self.seq, "modid": self.modid, "cmdid": self.cmdid, "retcode": self.retcode,
                "retcode_name": RET_NAMES.get(self.retcode, "?"),
                "host": None if self.host is None else self.host.to_dict()}


@dataclass
class ReportRequest(Message):
    modid: int = 0
    cmdid: int = 0
    host: Optional[HostInfo] = None
    retcode: int = 0
    FIELDS: ClassVar[Tuple[Tuple[int, str, str], ...]] = (
        (1, "modid", "int32"), (2, "cmdid", "int32"), (3, "host", "HostInfo"), (4, "retcode", "int32"))

    def to_bytes(self) -> bytes:
        out = bytearray()
        _emit_int32(out, 1, _check_int32(self.modid, "modid"))
        _emit_int32(out, 2, _check_int32(self.cmdid, "cmdid"))
        if self.host is not None:
            _emit_msg(out, 3, self.host.to_bytes())
        _emit_int32(out, 4, _check_int32(self.retcode, "retcode"))
        return bytes(out)

    def merge_from(self, buf: bytes) -> None:
        for f, wt, v in iter_fields(buf):
            if f == 1:
                _want(wt, WT_VARINT, "modid"); self.modid = to_int32(v)  # type: ignore[arg-type]
            elif f == 2:
                _want(wt, WT_VARINT, "cmdid"); self.cmdid = to_int32(v)  # type: ignore[arg-type]
            elif f == 3:
                _want(wt, WT_LEN, "host")
                if self.host is None:
                    self.host = HostInfo()
                self.host.merge_from(v)  # type: ignore[arg-type]
            elif f == 4:
                _want(wt, WT_VARINT, "retcode"); self.retcode = to_int32(v)  # type: ignore[arg-type]

    def to_dict(self) -> Dict[str, Any]:
        return {"modid": self.modid, "cmdid": self.cmdid, "host": None if self.host is None else self.host.to_dict(),
                "retcode": self.retcode}


# API_GetRoute* have no message type of their own: msgid 7 carries a GetRouteRequest, msgid 8 a GetRouteResponse.
API_GetRouteRequest = GetRouteRequest
API_GetRouteResponse = GetRouteResponse

MSG_TYPES: Dict[int, Type[Message]] = {
    ID_GetRouteRequest: GetRouteRequest,
    ID_GetRouteResponse: GetRouteResponse,
    ID_ReportStatusRequest: ReportStatusRequest,
    ID_GetHostRequest: GetHostRequest,
    ID_GetHostResponse: GetHostResponse,
    ID_ReportRequest: ReportRequest,
    ID_API_GetRouteRequest: API_GetRouteRequest,
    ID_API_GetRouteResponse: API_GetRouteResponse,
}
MSG_NAMES: Dict[int, str] = {
    ID_GetRouteRequest: "GetRouteRequest", ID_GetRouteResponse: "GetRouteResponse",
    ID_ReportStatusRequest: "ReportStatusRequest", ID_GetHostRequest: "GetHostRequest",
    ID_GetHostResponse: "GetHostResponse", ID_ReportRequest: "ReportRequest",
    ID_API_GetRouteRequest: "API_GetRouteRequest", ID_API_GetRouteResponse: "API_GetRouteResponse",
}


# --------------------------------------------------------------------------------------------- framing
def encode_frame(msgid: int, body: Union[bytes, Message]) -> bytes:
    if isinstance(body, Message):
        body = body.to_bytes()
    if len(body) > MESSAGE_LENGTH_LIMIT:
        raise ValueError(f"body too long for Lars: {len(body)} > {MESSAGE_LENGTH_LIMIT}")
    return HEAD.pack(_check_int32(msgid, "msgid"), len(body)) + body


def decode_head(buf: bytes) -> Tuple[int, int]:
    if len(buf) < MESSAGE_HEAD_LEN:
        raise WireError("short head")
    msgid, msglen = HEAD.unpack_from(buf, 0)
    if msglen < 0 or msglen > MESSAGE_LENGTH_LIMIT:
        raise WireError(f"bad msglen {msglen} (Lars would drop/close)")
    return msgid, msglen


def decode_body(msgid: int, body: bytes) -> Message:
    cls = MSG_TYPES.get(msgid)
    if cls is None:
        raise WireError(f"unknown msgid {msgid}")
    return cls.from_bytes(body)


def decode_datagram(dgram: bytes) -> Tuple[int, Message]:
    """One UDP datagram = one frame; like udp_server::do_read, length must match exactly."""
    msgid, msglen = decode_head(dgram)
    if MESSAGE_HEAD_LEN + msglen != len(dgram):
        raise WireError(f"datagram length {len(dgram)} != 8 + msglen {msglen}")
    return msgid, decode_body(msgid, dgram[MESSAGE_HEAD_LEN:])


class FrameDecoder:
    """Incremental TCP stream decoder: feed() bytes, iterate complete (msgid, body) frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> List[Tuple[int, bytes]]:
        self._buf += data
        frames: List[Tuple[int, bytes]] = []
        while len(self._buf) >= MESSAGE_HEAD_LEN:
            msgid, msglen = decode_head(bytes(self._buf[:MESSAGE_HEAD_LEN]))
            if len(self._buf) < MESSAGE_HEAD_LEN + msglen:
                break
            frames.append((msgid, bytes(self._buf[MESSAGE_HEAD_LEN:MESSAGE_HEAD_LEN + msglen])))
            del self._buf[:MESSAGE_HEAD_LEN + msglen]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)


# --------------------------------------------------------------------------------------------- clients
TC = TypeVar("TC", bound="TcpConn")


class TcpConn:
    """Blocking TCP connection to lars_dns / lars_reporter (127.0.0.1 by default)."""

    def __init__(self, host: str = "127.0.0.1", port: int = DNS_PORT, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.dec = FrameDecoder()
        self._ready: List[Tuple[int, bytes]] = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self: TC) -> TC:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, msgid: int, msg: Union[Message, bytes]) -> None:
        self.sock.sendall(encode_frame(msgid, msg))

    def recv_frame(self, timeout: Optional[float] = None) -> Tuple[int, bytes]:
        """Next raw frame; raises socket.timeout after `timeout` s (None = socket default)."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        while not self._ready:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("peer closed")
            self._ready.extend(self.dec.feed(data))
        return self._ready.pop(0)

    def recv(self, timeout: Optional[float] = None) -> Tuple[int, Message]:
        msgid, body = self.recv_frame(timeout)
        return msgid, decode_body(msgid, body)


class DnsClient(TcpConn):
    def __init__(self, host: str = "127.0.0.1", port: int = DNS_PORT, timeout: float = 5.0) -> None:
        super().__init__(host, port, timeout)

    def get_route(self, modid: int, cmdid: int, timeout: float = 5.0) -> GetRouteResponse:
        """msgid 1 -> msgid 2.  Also subscribes this connection to (modid, cmdid) pushes."""
        self.send(ID_GetRouteRequest, GetRouteRequest(modid, cmdid))
        msgid, msg = self.recv(timeout)
        if msgid != ID_GetRouteResponse or not isinstance(msg, GetRouteResponse):
            raise WireError(f"unexpected msgid {msgid}")
        return msg

    def wait_push(self, timeout: float) -> GetRouteResponse:
        msgid, msg = self.recv(timeout)
        if msgid != ID_GetRouteResponse or not isinstance(msg, GetRouteResponse):
            raise WireError(f"unexpected msgid {msgid}")
        return msg


class ReporterClient(TcpConn):
    def __init__(self, host: str = "127.0.0.1", port: int = REPORTER_PORT, timeout: float = 5.0) -> None:
        super().__init__(host, port, timeout)

    def report(self, req: ReportStatusRequest) -> None:
        """msgid 3, fire-and-forget (lars_reporter never replies)."""
        self.send(ID_ReportStatusRequest, req)


def agent_port(modid: int, cmdid: int, base: int = AGENT_BASE_PORT) -> int:
    """The agent UDP port the C++ API uses for (modid, cmdid): base + (modid + cmdid) % 3 (C semantics)."""
    s = to_int32(modid + cmdid)
    # C '%' truncates toward zero; lars_api indexes _sockfd[] with it (negative => UB in C; we mirror math.fmod)
    idx = abs(s) % 3 * (1 if s >= 0 else -1)
    return base + idx


class AgentClient:
    """UDP client for lars_lb_agent (one socket per port, like lars_api's 3 connected sockets)."""

    def __init__(self, host: str = "127.0.0.1", base_port: int = AGENT_BASE_PORT, timeout: float = 1.0) -> None:
        self.host = host
        self.base_port = base_port
        self.timeout = timeout
        self.socks: Dict[int, socket.socket] = {}
        self.seq = 0

    def _sock(self, port: int) -> socket.socket:
        s = self.socks.get(port)
        if s is None:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect((self.host, port))
            s.settimeout(self.timeout)
            self.socks[port] = s
        return s

    def close(self) -> None:
        for s in self.socks.values():
            s.close()
        self.socks.clear()

    def __enter__(self) -> "AgentClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rpc(self, port: int, msgid: int, msg: Message, want: int) -> Message:
        s = self._sock(port)
        s.send(encode_frame(msgid, msg))
        while True:
            rid, rmsg = decode_datagram(s.recv(65536))
            if rid != want:
                raise WireError(f"unexpected msgid {rid}, wanted {want}")
            if want == ID_GetHostResponse and isinstance(msg, GetHostRequest) and isinstance(rmsg, GetHostResponse) \
                    and rmsg.seq < msg.seq:
                continue  # stale reply to an earlier timed-out request (lars_api does the same)
            return rmsg

    def get_host(self, modid: int, cmdid: int, port: Optional[int] = None) -> GetHostResponse:
        """msgid 4 -> msgid 5."""
        seq = self.seq
        self.seq = (self.seq + 1) & _U32
        rsp = self._rpc(port or agent_port(modid, cmdid, self.base_port), ID_GetHostRequest,
                        GetHostRequest(seq, modid, cmdid), ID_GetHostResponse)
        assert isinstance(rsp, GetHostResponse)
        return rsp

    def get_route(self, modid: int, cmdid: int, port: Optional[int] = None) -> GetRouteResponse:
        """msgid 7 (GetRouteRequest body) -> msgid 8 (GetRouteResponse body)."""
        rsp = self._rpc(port or agent_port(modid, cmdid, self.base_port), ID_API_GetRouteRequest,
                        GetRouteRequest(modid, cmdid), ID_API_GetRouteResponse)
        assert isinstance(rsp, GetRouteResponse)
        return rsp

    def report(self, modid: int, cmdid: int, ip: Union[str, int], port: int, retcode: int,
               agent_udp_port: Optional[int] = None) -> None:
        """msgid 6, fire-and-forget."""
        req = ReportRequest(modid, cmdid, HostInfo.make(ip, port), retcode)
        self._sock(agent_udp_port or agent_port(modid, cmdid, self.base_port)).send(encode_frame(ID_ReportRequest, req))


# --------------------------------------------------------------------------------------------- selftest
def _samples() -> List[Tuple[int, Message]]:
    big_ip = ip_to_int32("192.168.1.101")          # negative int32
    small_ip = ip_to_int32("10.0.0.1")
    return [
        (ID_GetRouteRequest, GetRouteRequest(1, 1)),
        (ID_GetRouteRequest, GetRouteRequest(0, 0)),
        (ID_GetRouteRequest, GetRouteRequest(2 ** 31 - 1, -1)),
        (ID_GetRouteResponse, GetRouteResponse(1, 2, [])),
        (ID_GetRouteResponse, GetRouteResponse(1, 1, [HostInfo(big_ip, 7001), HostInfo(small_ip, 8001),
                                                      HostInfo(0, 0), HostInfo(-(2 ** 31), 65535)])),
        (ID_ReportStatusRequest, ReportStatusRequest(1, 1, ip_to_int32("127.0.0.1"), [
            HostCallResult(big_ip, 7001, 10, 2, False), HostCallResult(small_ip, 8001, 0, 0, True),
            HostCallResult(0, 0, _U32, 1, False)], 1700000000)),
        (ID_ReportStatusRequest, ReportStatusRequest()),
        (ID_GetHostRequest, GetHostRequest(0, 1, 1)),
        (ID_GetHostRequest, GetHostRequest(_U32, -5, 3)),
        (ID_GetHostResponse, GetHostResponse(7, 1, 1, RET_SUCC, HostInfo(big_ip, 7002))),
        (ID_GetHostResponse, GetHostResponse(8, 1, 2, RET_OVERLOAD, None)),
        (ID_GetHostResponse, GetHostResponse(9, 1, 3, RET_NOEXIST, HostInfo(0, 0))),  # present-but-empty host
        (ID_ReportRequest, ReportRequest(1, 1, HostInfo(big_ip, 7001), RET_OVERLOAD)),
        (ID_ReportRequest, ReportRequest(1, 1, None, 0)),
        (ID_API_GetRouteRequest, API_GetRouteRequest(1, 3)),
        (ID_API_GetRouteResponse, API_GetRouteResponse(1, 3, [HostInfo(ip_to_int32("127.0.0.1"), 9001)])),
    ]


# Golden bodies: SerializeToString() output of the C++ classes generated from base/proto/lars.proto by
# protoc/libprotobuf 3.21.12, for exactly the values of _samples() in the same order (generator: golden.cpp
# described in the original-Lars measuring kit's notes, kept outside this repository).  lars_wire's encoder must reproduce them byte for byte.
GOLDEN_BODIES_HEX: List[str] = [
    '08011001',
    '',
    '08ffffffff0710ffffffffffffffffff01',
    '08011002',
    '080110011a0e08e582a085fcffffffff0110d9361a08088180805010c13e1a001a0f0880808080f8ffffffff0110ffff03',
    '0801100118818080f807221208e582a085fcffffffff0110d936180a2002220a088180805010c13e2801220818ffffffff0f20012880e2cfaa06',
    '',
    '10011801',
    '08ffffffff0f10fbffffffffffffffff011803',
    '0807100118012a0e08e582a085fcffffffff0110da36',
    '0808100118022001',
    '08091001180320032a00',
    '080110011a0e08e582a085fcffffffff0110d9362001',
    '08011001',
    '08011003',
    '080110031a0908818080f80710a946',
]


def selftest(verbose: bool = False) -> int:
    failures = 0

    def check(cond: bool, what: str) -> None:
        nonlocal failures
        if not cond:
            failures += 1
            print(f"FAIL: {what}")
        elif verbose:
            print(f"ok: {what}")

    # varint basics
    for v in (0, 1, 127, 128, 300, 2 ** 31 - 1, 2 ** 32 - 1, 2 ** 63, _U64):
        enc = encode_varint(v)
        check(decode_varint(enc, 0) == (v, len(enc)), f"varint {v}")
    check(encode_varint(300) == b"\xac\x02", "varint 300 = ac 02")
    check(len(encode_varint(-1 & _U64)) == 10, "negative int32 -> 10-byte varint")
    check(ip_to_int32("192.168.1.1") == 0xC0A80101 - 2 ** 32 and int_to_ip(ip_to_int32("192.168.1.1")) == "192.168.1.1",
          "ip <-> int32")
    check(agent_port(1, 1) == 8890 and agent_port(1, 2) == 8888 and agent_port(1, 3) == 8889, "agent port mapping")
    # known encodings (hand-derived from the protobuf spec)
    check(GetRouteRequest(1, 1).to_bytes() == b"\x08\x01\x10\x01", "GetRouteRequest(1,1) bytes")
    check(GetRouteRequest(0, 0).to_bytes() == b"", "defaults omitted")
    check(HostInfo(-1, 0).to_bytes() == b"\x08" + b"\xff" * 9 + b"\x01", "HostInfo ip=-1 bytes")
    check(GetHostResponse(1, 0, 0, 0, HostInfo()).to_bytes() == b"\x08\x01\x2a\x00", "present empty sub-message")
    check(HostCallResult(overload=True).to_bytes() == b"\x28\x01", "bool field")
    check(encode_frame(1, GetRouteRequest(1, 1)) == b"\x01\x00\x00\x00\x04\x00\x00\x00\x08\x01\x10\x01", "frame LE head")
    # round trips of every message type
    for msgid, msg in _samples():
        body = msg.to_bytes()
        frame = encode_frame(msgid, msg)
        back_id, back = decode_datagram(frame)
        check(back_id == msgid and back == msg, f"round-trip {MSG_NAMES[msgid]} {msg}")
        dec = FrameDecoder()
        frames = []
        for i in range(len(frame)):  # byte-at-a-time TCP reassembly
            frames += dec.feed(frame[i:i + 1])
        check(frames == [(msgid, body)] and dec.pending == 0, f"stream reassembly {MSG_NAMES[msgid]}")
    for i, (msgid, msg) in enumerate(_samples()):
        gold = bytes.fromhex(GOLDEN_BODIES_HEX[i])
        check(msg.to_bytes() == gold, f"golden C++ bytes #{i} {MSG_NAMES[msgid]} {msg}")
        check(MSG_TYPES[msgid].from_bytes(gold) == msg, f"decode golden C++ bytes #{i} {MSG_NAMES[msgid]}")
    # two frames in one chunk + a partial third
    dec = FrameDecoder()
    blob = encode_frame(1, GetRouteRequest(1, 1)) + encode_frame(2, GetRouteResponse(1, 1, [HostInfo(1, 2)]))
    third = encode_frame(3, ReportStatusRequest(1, 1))
    got = dec.feed(blob + third[:5])
    check(len(got) == 2 and dec.pending == 5, "multi-frame chunk")
    got = dec.feed(third[5:])
    check(len(got) == 1 and got[0][0] == 3 and dec.pending == 0, "frame completion")
    # decoder robustness: unknown fields skipped, field order, last-one-wins, sub-message merge, 32-bit truncation
    body = b"\x10\x02" + b"\x08\x01" + b"\x98\x06\x05" + b"\x22\x03abc" + b"\x2d\x01\x02\x03\x04" + b"\x31" + b"\x00" * 8
    check(GetRouteRequest.from_bytes(body) == GetRouteRequest(1, 2), "unknown fields/order")
    check(GetRouteRequest.from_bytes(b"\x08\x01\x08\x05") == GetRouteRequest(5, 0), "last one wins")
    check(GetHostResponse.from_bytes(b"\x2a\x02\x08\x07\x2a\x02\x10\x09").host == HostInfo(7, 9), "sub-message merge")
    check(GetRouteRequest.from_bytes(b"\x08" + encode_varint(2 ** 32 + 5)) == GetRouteRequest(5, 0), "int32 truncation")
    for bad, what in ((b"\x08", "truncated varint"), (b"\x0a\x05ab", "truncated LEN"), (b"\x0b", "wire type 3"),
                      (b"\x08" + b"\xff" * 10 + b"\x01", "11-byte varint"), (b"\x0a\x00", "wrong wire type")):
        try:
            GetRouteRequest.from_bytes(bad)
            check(False, f"reject {what}")
        except WireError:
            check(True, f"reject {what}")
    for bad_head, what in ((HEAD.pack(1, -1), "negative msglen"), (HEAD.pack(1, MESSAGE_LENGTH_LIMIT + 1), "msglen > limit")):
        try:
            decode_head(bad_head)
            check(False, what)
        except WireError:
            check(True, what)
    try:
        decode_datagram(encode_frame(1, GetRouteRequest(1, 1)) + b"\x00")
        check(False, "datagram length mismatch")
    except WireError:
        check(True, "datagram length mismatch")
    for bad_msg, what in ((GetRouteRequest(2 ** 31, 0), "int32 overflow"), (GetHostRequest(-1, 0, 0), "uint32 negative")):
        try:
            bad_msg.to_bytes()
            check(False, f"encoder rejects {what}")
        except ValueError:
            check(True, f"encoder rejects {what}")
    n = len(_samples())
    print(json.dumps({"selftest": "PASS" if failures == 0 else "FAIL", "failures": failures, "messages_round_tripped": n,
                      "golden_vectors": len(GOLDEN_BODIES_HEX)}))
    return 0 if failures == 0 else 1


# --------------------------------------------------------------------------------------------- CLI
def _out(obj: object) -> None:
    print(json.dumps(obj, ensure_ascii=False))


def _msg_out(msgid: int, msg: Message, **extra: object) -> None:
    d = {"msgid": msgid, "type": MSG_NAMES.get(msgid, "?"), "msg": msg.to_dict()}
    d.update(extra)
    _out(d)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="lars_wire.py", description="Lars wire protocol codec/client (stdlib only)")
    ap.add_argument("--selftest", action="store_true", help="round-trip every message and check known encodings")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--host", default="127.0.0.1")
    sub = ap.add_subparsers(dest="cmd")

    p = sub.add_parser("dns-get-route", help="TCP GetRouteRequest(1) -> GetRouteResponse(2) from lars_dns")
    p.add_argument("modid", type=int); p.add_argument("cmdid", type=int); p.add_argument("--port", type=int, default=DNS_PORT)

    p = sub.add_parser("dns-watch", help="subscribe to (modid,cmdid) on lars_dns and print pushed GetRouteResponses")
    p.add_argument("modid", type=int); p.add_argument("cmdid", type=int); p.add_argument("--port", type=int, default=DNS_PORT)
    p.add_argument("--seconds", type=float, default=10.0)

    p = sub.add_parser("report-status", help="TCP ReportStatusRequest(3) to lars_reporter (no reply)")
    p.add_argument("modid", type=int); p.add_argument("cmdid", type=int)
    p.add_argument("--caller", default="127.0.0.1"); p.add_argument("--ip", default="192.168.1.101")
    p.add_argument("--hport", type=int, default=7001); p.add_argument("--succ", type=int, default=1)
    p.add_argument("--err", type=int, default=0); p.add_argument("--overload", action="store_true")
    p.add_argument("--port", type=int, default=REPORTER_PORT)

    p = sub.add_parser("agent-get-host", help="UDP GetHostRequest(4) -> GetHostResponse(5)")
    p.add_argument("modid", type=int); p.add_argument("cmdid", type=int); p.add_argument("--count", type=int, default=1)
    p.add_argument("--port", type=int, default=None, help="override agent port (default 8888+(modid+cmdid)%%3)")

    p = sub.add_parser("agent-get-route", help="UDP API_GetRouteRequest(7) -> API_GetRouteResponse(8)")
    p.add_argument("modid", type=int); p.add_argument("cmdid", type=int)
    p.add_argument("--port", type=int, default=None)

    p = sub.add_parser("agent-report", help="UDP ReportRequest(6) (no reply)")
    p.add_argument("modid", type=int); p.add_argument("cmdid", type=int); p.add_argument("ip"); p.add_argument("hport", type=int)
    p.add_argument("retcode", type=int); p.add_argument("--count", type=int, default=1)

    p = sub.add_parser("decode", help="decode a hex frame (head+body)")
    p.add_argument("hex")

    p = sub.add_parser("encode", help="encode a message given as JSON, print the frame hex")
    p.add_argument("msgid", type=int); p.add_argument("json")

    a = ap.parse_args(argv)
    if a.selftest:
        return selftest(a.verbose)
    if a.cmd is None:
        ap.print_help()
        return 2
    if a.cmd == "dns-get-route":
        with DnsClient(a.host, a.port) as c:
            t = time.perf_counter()
            rsp = c.get_route(a.modid, a.cmdid)
            _msg_out(ID_GetRouteResponse, rsp, rtt_ms=round((time.perf_counter() - t) * 1000, 3))
    elif a.cmd == "dns-watch":
        with DnsClient(a.host, a.port) as c:
            rsp = c.get_route(a.modid, a.cmdid)
            _msg_out(ID_GetRouteResponse, rsp, t=time.time(), kind="initial")
            end = time.time() + a.seconds
            while time.time() < end:
                try:
                    rsp = c.wait_push(max(0.01, end - time.time()))
                except socket.timeout:
                    break
                _msg_out(ID_GetRouteResponse, rsp, t=time.time(), kind="push")
    elif a.cmd == "report-status":
        req = ReportStatusRequest(a.modid, a.cmdid, ip_to_int32(a.caller),
                                  [HostCallResult(ip_to_int32(a.ip), a.hport, a.succ, a.err, a.overload)], int(time.time()))
        with ReporterClient(a.host, a.port) as c:
            c.report(req)
        _msg_out(ID_ReportStatusRequest, req, sent=True)
    elif a.cmd == "agent-get-host":
        with AgentClient(a.host) as c:
            for _ in range(a.count):
                t = time.perf_counter()
                hrsp = c.get_host(a.modid, a.cmdid, a.port)
                _msg_out(ID_GetHostResponse, hrsp, rtt_ms=round((time.perf_counter() - t) * 1000, 3))
    elif a.cmd == "agent-get-route":
        with AgentClient(a.host) as c:
            _msg_out(ID_API_GetRouteResponse, c.get_route(a.modid, a.cmdid, a.port))
    elif a.cmd == "agent-report":
        with AgentClient(a.host) as c:
            for _ in range(a.count):
                c.report(a.modid, a.cmdid, a.ip, a.hport, a.retcode)
        _out({"sent": a.count, "msgid": ID_ReportRequest})
    elif a.cmd == "decode":
        raw = bytes.fromhex(a.hex)
        msgid, msglen = decode_head(raw)
        body = raw[MESSAGE_HEAD_LEN:MESSAGE_HEAD_LEN + msglen]
        if len(body) != msglen:
            raise WireError("frame shorter than msglen")
        _msg_out(msgid, decode_body(msgid, body), msglen=msglen)
    elif a.cmd == "encode":
        cls = MSG_TYPES[a.msgid]
        d = json.loads(a.json)
        msg = _from_dict(cls, d)
        _out({"frame_hex": encode_frame(a.msgid, msg).hex(), "body_hex": msg.to_bytes().hex()})
    return 0


def _from_dict(cls: Type[Message], d: Dict[str, Any]) -> Message:
    kw: Dict[str, object] = {}
    for _no, name, typ in cls.FIELDS:
        if name not in d or d[name] is None:
            continue
        v = d[name]
        if typ == "repeated HostInfo":
            kw[name] = [_from_dict(HostInfo, x) for x in v]
        elif typ == "repeated HostCallResult":
            kw[name] = [_from_dict(HostCallResult, x) for x in v]
        elif typ == "HostInfo":
            kw[name] = _from_dict(HostInfo, v)
        elif name in ("ip", "caller") and isinstance(v, str):
            kw[name] = ip_to_int32(v)
        else:
            kw[name] = v
    return cls(**kw)


def cli() -> int:
    try:
        return main()
    except (WireError, ValueError, OSError, socket.timeout) as e:
        _out({"error": type(e).__name__, "detail": str(e)})
        return 1


if __name__ == "__main__":
    sys.exit(cli())
