"""The device authorization machine (oauthproxy_core/states.py, RFC 8628): the extracted table agrees
with the python-statemachine declaration, every (state, event) pair is defined (spec/security.md 27),
nothing moves backwards, time never revives a device, and only the approved state leads to
``redeemed`` (spec/security.md 39)."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oauthproxy_core.records import DeviceAuthorization
from oauthproxy_core.states import (
    DEVICE,
    DEVICE_GUARDS,
    Absorbed,
    DeviceEvent,
    DeviceMachine,
    DeviceState,
    EventData,
    UndeclaredWriteError,
    device_step,
)

RANK = {DeviceState.pending: 0, DeviceState.verifying: 1, DeviceState.approved: 2}
FINAL = DEVICE.final


def make_device(state: DeviceState | str, **kw: object) -> DeviceAuthorization:
    fields: dict[str, object] = {
        "id": "d" * 22,
        "state": state.value if isinstance(state, DeviceState) else state,
        "client_id": "client-1",
        "scopes": ("mcp",),
        "resource": "https://proxy.example/mcp",
        "created_at": 1000,
        "expires_at": 1600,
        "interval": 5,
        "txn_id": "t" * 22,
    }
    fields.update(kw)
    return DeviceAuthorization(**fields)  # type: ignore[arg-type]


matching = EventData(now=1050, client_id="client-1", txn_id="t" * 22)
event_data = st.builds(
    EventData,
    now=st.sampled_from([1050, 1599, 1600, 9000]),
    client_id=st.sampled_from([None, "client-1", "client-2"]),
    txn_id=st.sampled_from([None, "t" * 22, "u" * 22]),
)
devices = st.builds(
    make_device,
    st.sampled_from(list(DeviceState)),
    txn_id=st.sampled_from([None, "t" * 22]),
)


def advance(device: DeviceAuthorization, event: DeviceEvent, data: EventData) -> DeviceState:
    return DEVICE.next_state(device, event, data)


@given(device=devices, event=st.sampled_from(list(DeviceEvent)), data=event_data)
def test_table_agrees_with_the_declaration(
    device: DeviceAuthorization, event: DeviceEvent, data: EventData
) -> None:
    """Differential test: the hot-path table and python-statemachine compute the same next state."""
    try:
        fast = advance(device, event, data)
    except Absorbed as absorbed:
        assert absorbed.state in FINAL
        with pytest.raises(Absorbed):
            DEVICE.next_state_with_machine(device, event, data)
        return
    assert DEVICE.next_state_with_machine(device, event, data) is fast


@pytest.mark.parametrize("state", list(DeviceState))
@pytest.mark.parametrize("event", list(DeviceEvent))
def test_invariant_27_every_state_event_pair_is_defined(
    state: DeviceState, event: DeviceEvent
) -> None:
    """Invariant 27: a transition or a typed refusal for every pair; finals absorb."""
    device = make_device(state)
    if state in FINAL:
        with pytest.raises(Absorbed):
            advance(device, event, matching)
        return
    target = advance(device, event, matching)
    assert target in FINAL or RANK[target] >= RANK[state]
    if (state, event) not in DEVICE.table:
        assert target is DeviceState.failed


@given(device=devices, event=st.sampled_from(list(DeviceEvent)), data=event_data)
def test_invariant_27_nothing_moves_backwards(
    device: DeviceAuthorization, event: DeviceEvent, data: EventData
) -> None:
    try:
        target = advance(device, event, data)
    except Absorbed:
        assert DeviceState(device.state) in FINAL
        return
    assert target in FINAL or RANK[target] >= RANK[DeviceState(device.state)]


@given(device=devices, event=st.sampled_from(list(DeviceEvent)), data=event_data)
def test_invariant_27_advancing_the_clock_never_revives(
    device: DeviceAuthorization, event: DeviceEvent, data: EventData
) -> None:
    """Past the device's lifetime, whatever arrives is the deadline passing."""
    if DeviceState(device.state) in FINAL:
        return
    assert advance(device, event, attrs.evolve(data, now=device.expires_at)) is DeviceState.expired


@given(device=devices, event=st.sampled_from(list(DeviceEvent)), data=event_data)
def test_invariant_39_only_an_approved_device_reaches_redeemed(
    device: DeviceAuthorization, event: DeviceEvent, data: EventData
) -> None:
    """spec/security.md 39: ``redeemed`` (the only state in which tokens exist) is reached from
    ``approved`` alone, by ``token_issued``, by the client the code was issued to; and ``approved``
    only from ``verifying``, by the sign-in of the device's own transaction."""
    try:
        target = advance(device, event, data)
    except Absorbed:
        return
    if target is DeviceState.redeemed:
        assert device.state == DeviceState.approved.value
        assert event is DeviceEvent.token_issued and data.client_id == device.client_id
    if target is DeviceState.approved and device.state != DeviceState.approved.value:
        assert device.state == DeviceState.verifying.value
        assert event is DeviceEvent.sign_in_approved and data.txn_id == device.txn_id


def test_guards_are_the_declared_conditions() -> None:
    declared = {str(c) for s in DeviceMachine.states for t in s.transitions for c in t.cond}
    assert declared == set(DEVICE_GUARDS)


def test_slow_down_writes_the_interval_and_a_poll_cannot() -> None:
    """RFC 8628 §3.5: only ``slowed_down`` may lengthen the interval; ``polled`` writes the time."""
    device = make_device(DeviceState.pending)
    slowed = device_step(
        device, DeviceEvent.slowed_down, matching, interval=10, last_polled_at=1050
    )
    assert slowed.record.interval == 10 and slowed.record.version == device.version + 1
    with pytest.raises(UndeclaredWriteError):
        device_step(device, DeviceEvent.polled, matching, interval=10)


def test_a_redeemed_device_keeps_no_sealed_secret() -> None:
    device = make_device(DeviceState.approved, grant_id="g" * 22, upstream_sealed="sealed")
    redeemed = device_step(device, DeviceEvent.token_issued, matching, upstream_sealed=None)
    assert redeemed.state == DeviceState.redeemed.value
    assert redeemed.record.upstream_sealed is None


def test_a_bogus_stored_state_or_interval_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError):
        make_device("teleported")
    with pytest.raises(ValueError):
        make_device(DeviceState.pending, interval=0)
