"""Per-user connection limit (issue 13, item 16): the counter the server takes at login."""

from __future__ import annotations

import pytest

from ftpd.config import Config
from ftpd.slots import UserSlots


def test_the_default_limit_is_64_sessions_per_user():
    assert Config().max_connections_per_user == 64
    with pytest.raises(ValueError):
        Config().updated(max_connections_per_user=0)


def test_a_user_at_the_limit_gets_no_more_slots_and_others_are_unaffected():
    slots = UserSlots(3)
    assert [slots.acquire("hoarder") for _ in range(4)] == [True, True, True, False]
    assert slots.acquire("other")
    assert slots.held("hoarder") == 3


def test_a_released_slot_can_be_taken_again():
    slots = UserSlots(1)
    assert slots.acquire("alice")
    slots.release("alice")
    assert slots.acquire("alice")


def test_extra_releases_never_make_room_for_more():
    slots = UserSlots(2)
    slots.acquire("alice")
    for _ in range(5):
        slots.release("alice")
    assert [slots.acquire("alice") for _ in range(3)] == [True, True, False]
