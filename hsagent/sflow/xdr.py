"""XDR field types and the `Struct` declaration every sFlow structure is built from.

A structure is declared once as an ordered list of fields (name, XDR type, sflowtool label).
Packing, unpacking and printing are all derived from that list, so they cannot drift apart.
Structures made only of fixed-size fields are packed with one precompiled `struct.Struct`;
the others (strings, opaque data, arrays) go field by field.
"""

from __future__ import annotations

import ipaddress
import math
import struct
from collections import namedtuple
from typing import Any, NamedTuple

U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF


class DecodeError(ValueError):
    """Input that is not a well-formed sFlow datagram; `offset` is where decoding stopped."""

    def __init__(self, offset: int, problem: str):
        super().__init__(f"offset {offset}: {problem}")
        self.offset = offset
        self.problem = problem


def pad4(n: int) -> int:
    """Bytes of zero padding after n bytes of XDR data."""
    return -n % 4


class XdrType:
    """One XDR type. Fixed-size types have a `struct` code; variable ones pack themselves."""

    code: str | None = None  # struct format code for fixed-size types
    size: int = 0

    def text(self, value: Any) -> str:
        return str(value)

    def json(self, value: Any) -> Any:
        return value


class _Fixed(XdrType):
    def __init__(self, code: str, text=str, json=None):
        self.code = code
        self.size = struct.calcsize(">" + code)
        self.text = text
        self.json = json or (lambda value: value)


def _hex(value: bytes) -> str:
    return value.hex()


def _ip(value: bytes) -> str:
    """IPv4 dotted; IPv6 in full, 8 groups of 4 hex digits, as sflowtool prints it."""
    return ipaddress.ip_address(value).exploded


def _uuid(value: bytes) -> str:
    h = value.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _float32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def _percent100(value: int) -> str:
    """-1 is unknown; sflowtool divides in single precision, so we do too."""
    if value == -1:
        return "unknown"
    return f"{_float32(_float32(value) / _float32(100)):.2f}"


def _percent100_json(value: int) -> float | None:
    return None if value == -1 else float(_percent100(value))


def _load(value: float) -> str:
    return f"{value:.3f}"


def _load_json(value: float) -> float | None:
    return float(_load(value)) if math.isfinite(value) else None  # JSON has no NaN


U32 = _Fixed("I")
U64 = _Fixed("Q")
F32 = _Fixed("f", text=_load, json=_load_json)
MAC = _Fixed("6s2x", text=_hex, json=_hex)  # 6 bytes + 2 bytes of XDR padding
IP4 = _Fixed("4s", text=_ip, json=_ip)
IP6 = _Fixed("16s", text=_ip, json=_ip)
UUID = _Fixed("16s", text=_uuid, json=_uuid)  # opaque[16]: no length prefix (host spec erratum)
PERCENT100 = _Fixed("i", text=_percent100, json=_percent100_json)  # percent x 100, -1 = unknown


class String(XdrType):
    """XDR string<max>: u32 length, bytes, zero padding. Longer values are cut to `max_len`."""

    def __init__(self, max_len: int):
        self.max_len = max_len

    def pack(self, value: str) -> bytes:
        data = value.encode("utf-8", "replace")[: self.max_len]
        return struct.pack(">I", len(data)) + data + b"\0" * pad4(len(data))

    def unpack(self, buf: bytes, off: int, end: int) -> tuple[str, int]:
        data, off = _unpack_opaque(buf, off, end)
        # bytes that are not UTF-8 are kept (as U+DC80-U+DCFF) so printers can show them
        return data.decode("utf-8", "surrogateescape"), off


class Opaque(XdrType):
    """XDR opaque<>: u32 length, bytes, zero padding."""

    def pack(self, value: bytes) -> bytes:
        return struct.pack(">I", len(value)) + value + b"\0" * pad4(len(value))

    def unpack(self, buf: bytes, off: int, end: int) -> tuple[bytes, int]:
        return _unpack_opaque(buf, off, end)

    def text(self, value: bytes) -> str:
        return value.hex("-").upper()

    json = text


def _unpack_opaque(buf: bytes, off: int, end: int) -> tuple[bytes, int]:
    if off + 4 > end:
        raise DecodeError(off, "length field runs past the end of its structure")
    (n,) = struct.unpack_from(">I", buf, off)
    start, stop = off + 4, off + 4 + n
    if stop + pad4(n) > end:
        raise DecodeError(off, f"{n} bytes of data do not fit in the {end - start} left")
    return bytes(buf[start:stop]), stop + pad4(n)


class Array(XdrType):
    """XDR variable array T<>: u32 count, then the elements back to back."""

    def __init__(self, element: XdrType | "Struct"):
        self.element = element

    def pack(self, values) -> bytes:
        parts = [struct.pack(">I", len(values))]
        parts += [_pack_one(self.element, v) for v in values]
        return b"".join(parts)

    def unpack(self, buf: bytes, off: int, end: int) -> tuple[list, int]:
        if off + 4 > end:
            raise DecodeError(off, "array count runs past the end of its structure")
        (count,) = struct.unpack_from(">I", buf, off)
        off += 4
        # Every element takes at least 4 bytes: a hostile count cannot make us loop for long.
        if count * 4 > end - off:
            raise DecodeError(off - 4, f"array of {count} elements cannot fit in {end - off} bytes")
        values = []
        for _ in range(count):
            value, off = _unpack_one(self.element, buf, off, end)
            values.append(value)
        return values, off


_WRAP_MASKS = {"I": U32_MAX, "Q": U64_MAX}


def _wrap(xtype, value):
    mask = _WRAP_MASKS.get(xtype.code)
    return value & mask if mask is not None else value


def _pack_one(xtype, value) -> bytes:
    if isinstance(xtype, Struct):
        return xtype.pack(value)
    if xtype.code is not None:
        return struct.pack(">" + xtype.code, _wrap(xtype, value))
    return xtype.pack(value)


def _unpack_one(xtype, buf, off, end):
    if isinstance(xtype, Struct):
        return xtype.unpack(buf, off, end)
    if xtype.code is not None:
        if off + xtype.size > end:
            raise DecodeError(off, "value runs past the end of its structure")
        return struct.unpack_from(">" + xtype.code, buf, off)[0], off + xtype.size
    return xtype.unpack(buf, off, end)


class Field(NamedTuple):
    name: str  # attribute name in Python (the spec's field name)
    type: Any  # an XdrType or a nested Struct
    label: str  # the key sflowtool prints for it


class Struct:
    """An ordered XDR structure. `value_type` is the namedtuple its values are.

    `min_fields` supports structures that grew at the end (host_cpu: 17 fields in the 2010
    spec, 20 today): a body holding only the first `min_fields` decodes with None for the rest.
    """

    def __init__(self, name: str, fields: list[tuple], min_fields: int | None = None):
        self.name = name
        self.fields = [Field(*f) for f in fields]
        self.value_type = namedtuple(_camel(name), [f.name for f in self.fields])
        self.min_fields = min_fields or len(self.fields)
        codes = [f.type.code if isinstance(f.type, XdrType) else None for f in self.fields]
        self.fixed = None if None in codes else struct.Struct(">" + "".join(codes))
        if self.fixed is not None and self.min_fields < len(self.fields):
            self.min_struct = struct.Struct(">" + "".join(codes[: self.min_fields]))

    @property
    def size(self) -> int | None:
        """Encoded size for fixed-size structures, else None."""
        return self.fixed.size if self.fixed else None

    def pack(self, value) -> bytes:
        if self.fixed is not None:
            try:
                return self.fixed.pack(*value)
            except struct.error:
                # Counters wrap: a value past the field's width (or -1 for "unknown") is sent
                # modulo 2^width, never clamped. Rare, so the fast path above stays unmasked.
                return self.fixed.pack(*(_wrap(f.type, v) for f, v in zip(self.fields, value)))
        return b"".join(_pack_one(f.type, v) for f, v in zip(self.fields, value))

    def unpack(self, buf: bytes, off: int, end: int):
        """Decode one value at `off`, not reading past `end`; returns (value, next offset)."""
        if self.fixed is not None:
            if off + self.fixed.size <= end:
                return self.value_type._make(self.fixed.unpack_from(buf, off)), off + self.fixed.size
            if self.min_fields < len(self.fields) and off + self.min_struct.size <= end:
                head = self.min_struct.unpack_from(buf, off)
                rest = (None,) * (len(self.fields) - self.min_fields)
                return self.value_type._make(head + rest), off + self.min_struct.size
            raise DecodeError(off, f"{self.name} needs {self.fixed.size} bytes, {end - off} left")
        values = []
        for f in self.fields:
            value, off = _unpack_one(f.type, buf, off, end)
            values.append(value)
        return self.value_type._make(values), off

    def __repr__(self) -> str:
        return f"Struct({self.name})"


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
