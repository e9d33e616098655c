"""The transaction state machine (oauthproxy_core/states.py): the table extracted at import agrees
with the python-statemachine declaration, every (state, event) pair is defined (spec/security.md 27), and
nothing moves backwards."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oauthproxy_core.pkce import s256
from oauthproxy_core.records import Transaction
from oauthproxy_core.states import (
    FINAL_STATES,
    GUARDS,
    TABLE,
    Absorbed,
    EventData,
    TransactionMachine,
    TxEvent,
    TxState,
    advance,
    advance_with_machine,
)

VERIFIER = "a" * 43
CHALLENGE = s256(VERIFIER)
#: Progress order: a transition may only go to a later rank or to a final state.
RANK = {
    TxState.registered: 0,
    TxState.pkce_bound: 1,
    TxState.upstream_pending: 2,
    TxState.code_issued: 3,
    TxState.exchanged: 4,
}


def make_tx(state: TxState | str, **kw: object) -> Transaction:
    fields: dict[str, object] = {
        "id": "t" * 22,
        "state": state.value if isinstance(state, TxState) else state,
        "client_id": "client-1",
        "redirect_uri": "http://127.0.0.1:9999/cb",
        "code_challenge": CHALLENGE,
        "scopes": ("mcp",),
        "resource": "https://proxy.example/mcp",
        "created_at": 1000,
        "expires_at": 1600,
        "browser_hash": "b" * 64,
        "code_expires_at": 1120,
    }
    fields.update(kw)
    return Transaction(**fields)  # type: ignore[arg-type]


matching = EventData(
    now=1050,
    browser_hash="b" * 64,
    client_id="client-1",
    redirect_uri="http://127.0.0.1:9999/cb",
    resource="https://proxy.example/mcp",
    code_verifier=VERIFIER,
)

event_data = st.builds(
    EventData,
    now=st.sampled_from([1050, 1119, 1120, 1599, 1600, 5000]),
    browser_hash=st.sampled_from([None, "b" * 64, "c" * 64]),
    client_id=st.sampled_from([None, "client-1", "client-2"]),
    redirect_uri=st.sampled_from([None, "http://127.0.0.1:9999/cb", "http://127.0.0.1:9998/cb"]),
    resource=st.sampled_from([None, "https://proxy.example/mcp", "https://other.example/mcp"]),
    code_verifier=st.sampled_from([None, VERIFIER, "b" * 43, "short"]),
)
transactions = st.builds(
    make_tx,
    st.sampled_from(list(TxState)),
    redirect_uri_sent=st.booleans(),
    redirect_uri=st.sampled_from(["http://127.0.0.1:9999/cb", "javascript:alert(1)"]),
    code_challenge=st.sampled_from([CHALLENGE, "x" * 10]),
    browser_hash=st.sampled_from([None, "b" * 64]),
    code_expires_at=st.sampled_from([None, 1120]),
)


@given(tx=transactions, event=st.sampled_from(list(TxEvent)), data=event_data)
def test_table_agrees_with_the_declaration(
    tx: Transaction, event: TxEvent, data: EventData
) -> None:
    """Differential test: the hot-path table and python-statemachine compute the same next state."""
    try:
        fast = advance(tx, event, data)
    except Absorbed as a:
        fast_absorbed = a.state
        with pytest.raises(Absorbed):
            advance_with_machine(tx, event, data)
        assert TxState(tx.state) == fast_absorbed
        return
    assert advance_with_machine(tx, event, data) is fast


@pytest.mark.parametrize("state", list(TxState))
@pytest.mark.parametrize("event", list(TxEvent))
def test_invariant_27_every_state_event_pair_is_defined(state: TxState, event: TxEvent) -> None:
    """Invariant 27: a transition or a typed refusal for every pair; finals absorb; nothing goes back."""
    tx = make_tx(state)
    if state in FINAL_STATES:
        with pytest.raises(Absorbed):
            advance(tx, event, matching)
        return
    target = advance(tx, event, matching)
    assert target in FINAL_STATES or RANK[target] > RANK[state]
    if (state, event) not in TABLE:
        assert target is TxState.failed


@given(tx=transactions, event=st.sampled_from(list(TxEvent)), data=event_data)
def test_invariant_27_nothing_moves_backwards(
    tx: Transaction, event: TxEvent, data: EventData
) -> None:
    try:
        target = advance(tx, event, data)
    except Absorbed:
        assert TxState(tx.state) in FINAL_STATES
        return
    assert target in FINAL_STATES or RANK[target] > RANK[TxState(tx.state)]


@given(tx=transactions, data=event_data)
def test_invariant_27_advancing_the_clock_never_revives(tx: Transaction, data: EventData) -> None:
    """Once a guard fails because time passed, a later clock cannot make it pass again."""
    for event in (TxEvent.consent_approved, TxEvent.upstream_returned, TxEvent.code_redeemed):
        if TxState(tx.state) in FINAL_STATES:
            return
        early = advance(tx, event, data)
        later = advance(tx, event, attrs.evolve(data, now=data.now + 10_000))
        if early in FINAL_STATES:
            assert later in FINAL_STATES
        if TxState(tx.state) is not TxState.exchanged:
            # Past every deadline, whatever arrives is the deadline passing.
            assert later is TxState.expired


def test_guards_are_the_declared_conditions() -> None:
    declared = {str(c) for s in TransactionMachine.states for t in s.transitions for c in t.cond}
    assert declared == set(GUARDS)


def test_redemption_guard_checks_every_binding() -> None:
    """spec/security.md 5, 9: each binding on its own is enough to refuse a code."""
    tx = make_tx(TxState.code_issued)
    assert advance(tx, TxEvent.code_redeemed, matching) is TxState.exchanged
    for change in (
        {"client_id": "client-2"},
        {"redirect_uri": "http://127.0.0.1:9998/cb"},
        {"resource": "https://other.example/mcp"},
        {"code_verifier": "b" * 43},
        {"code_verifier": None},
    ):
        assert (
            advance(tx, TxEvent.code_redeemed, attrs.evolve(matching, **change)) is TxState.failed
        )
    # spec/security.md 9: a code past its lifetime is consumed as well, by an audited expiry.
    late = attrs.evolve(matching, now=1120)
    assert advance(tx, TxEvent.code_redeemed, late) is TxState.expired


def test_callback_guard_requires_the_same_browser() -> None:
    """spec/security.md 12, 13."""
    tx = make_tx(TxState.upstream_pending)
    assert advance(tx, TxEvent.upstream_returned, matching) is TxState.code_issued
    for other in (None, "c" * 64):
        data = attrs.evolve(matching, browser_hash=other)
        assert advance(tx, TxEvent.upstream_returned, data) is TxState.failed
    unbound = make_tx(TxState.upstream_pending, browser_hash=None)
    assert advance(unbound, TxEvent.upstream_returned, matching) is TxState.failed


def test_a_bogus_stored_state_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError):
        make_tx("teleported")
