"""UVAP's messages (tests/proto/uvap_fvc.proto) compiled for a test session, and read strictly.

A record is read as UVAP's consumers read it: protobuf's ``json_format.Parse`` without
``ignore_unknown_fields``, so a field UVAP does not define, a wrong type or an enum name it
does not know fails the parse.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

PROTO = Path(__file__).resolve().parents[1] / "proto" / "uvap_fvc.proto"


@dataclass(frozen=True)
class UvapMessages:
    """The compiled module, and strict parsing into its messages."""

    module: ModuleType

    def parse(self, name: str, text: str | bytes) -> Message:
        """JSON ``text`` as UVAP's message ``name``; ParseError when UVAP could not read it."""
        message: Message = getattr(self.module, name)()
        json_format.Parse(text, message)
        return message

    def as_dict(self, message: Message) -> dict[str, Any]:
        """What the parse read, every field included, with the .proto's field names."""
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )


def compile_messages(out: Path) -> UvapMessages:
    """Compile the .proto into ``out`` with grpc_tools' protoc and import the result.

    Once per process: the messages join protobuf's default pool under UVAP's full names.
    """
    from grpc_tools import protoc

    argv = ["protoc", f"--proto_path={PROTO.parent}", f"--python_out={out}", str(PROTO)]
    if protoc.main(argv) != 0:
        message = f"protoc could not compile {PROTO}"
        raise RuntimeError(message)
    generated = out / f"{PROTO.stem}_pb2.py"
    spec = importlib.util.spec_from_file_location(f"{PROTO.stem}_pb2", generated)
    if spec is None or spec.loader is None:
        message = f"cannot import {generated}"
        raise RuntimeError(message)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return UvapMessages(module)
