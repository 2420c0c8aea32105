"""What ``import protocol`` offers: the whole catalogue, and nothing the catalogue
merely uses (``json``, ``re``, the schema helpers)."""

from __future__ import annotations

import protocol
import protocol.messages as messages
import protocol.schema as schema


def test_every_message_class_is_importable_from_protocol():
    for cls in [*protocol.REQUESTS.values(), *protocol.REPLIES.values(),
                messages.Entry, messages.UploadInfo]:
        assert getattr(protocol, cls.__name__) is cls


def test_the_catalogue_lists_every_public_name_it_defines():
    defined = {name for name, value in vars(messages).items()
               if not name.startswith("_") and getattr(value, "__module__", None)
               in ("protocol.messages", None) and not isinstance(value, type(messages))}
    defined -= {"annotations"}
    assert defined <= set(messages.__all__)
    assert set(messages.__all__) <= set(protocol.__all__)


def test_helpers_the_catalogue_uses_do_not_leak_into_protocol():
    for name in ("json", "re", "fld", "dataclass", "field", "typing", "math", "Any",
                 "ClassVar", "annotations"):
        assert not hasattr(protocol, name), name


def test_the_schema_engine_lives_apart_from_the_catalogue():
    assert messages.Message is schema.Message
    assert protocol.Message is schema.Message
    assert not hasattr(schema, "Put") and not hasattr(schema, "REQUESTS")
