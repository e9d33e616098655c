"""The authorization transaction lifecycle: the ONLY place transitions are declared.

Theory of operation (h11's "Rule 1"): a transaction is created when a registered client's
authorization request passes client and redirect-URI validation (``registered``) and its PKCE
challenge is bound (``pkce_bound``, RFC 7636 §4.4). The user approves the client on the proxy's own
consent page, and only then does the proxy create its upstream ``state`` and send the browser to the
provider (``upstream_pending``; SECURITY.md 11). The provider's callback, arriving from the same
browser, lets the proxy redeem the upstream code and issue its own code (``code_issued``). The client's
token request redeems that code exactly once (``exchanged``, RFC 6749 §4.1.2 "MUST NOT use the
authorization code more than once"). A second redemption moves the transaction to ``revoked`` and
revokes what the first issued.

Rules, in the style of h2's state tables:

- transitions only move forward; ``failed``, ``denied``, ``expired`` and ``revoked`` are final and
  absorb every event (nothing changes, the caller gets a typed error);
- an event with no row in a non-final state fails closed: the transaction becomes ``failed``;
- a row's guard is a one-line call into a pure validator; a false guard also fails closed.

``TransactionMachine`` (python-statemachine ``StateMachine``, never the permissive ``StateChart``) is
the declaration and the source of ``spec/transitions.md``. The hot path runs on ``TABLE``, extracted
from the declaration at import time; ``tests/core/test_states.py`` proves the two agree on every
(state, event, guard outcome).
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from statemachine import State, StateMachine
from statemachine.exceptions import TransitionNotAllowed

from .pkce import verify_code_verifier
from .redirect_uris import is_acceptable_redirect_uri

if TYPE_CHECKING:
    from .records import Transaction


class TxState(enum.Enum):
    registered = "registered"
    pkce_bound = "pkce_bound"
    upstream_pending = "upstream_pending"
    code_issued = "code_issued"
    exchanged = "exchanged"
    failed = "failed"
    denied = "denied"
    expired = "expired"
    revoked = "revoked"


class TxEvent(enum.Enum):
    """Inputs to the machine, past-tense as they describe what happened."""

    challenge_bound = "challenge_bound"
    consent_approved = "consent_approved"
    consent_denied = "consent_denied"
    upstream_returned = "upstream_returned"
    upstream_denied = "upstream_denied"
    upstream_failed = "upstream_failed"
    code_redeemed = "code_redeemed"
    code_replayed = "code_replayed"
    deadline_passed = "deadline_passed"
    aborted = "aborted"


class GrantState(enum.Enum):
    active = "active"
    revoked = "revoked"


FINAL_STATES = frozenset({TxState.failed, TxState.denied, TxState.expired, TxState.revoked})


@attrs.frozen(kw_only=True)
class EventData:
    """What a guard may look at besides the transaction. Fields unused by an event stay ``None``."""

    now: int
    browser_hash: str | None = attrs.field(default=None, repr=False)
    client_id: str | None = None
    redirect_uri: str | None = None
    resource: str | None = None
    code_verifier: str | None = attrs.field(default=None, repr=False)


# Guards: one line each, calling the pure validators (STYLE.md). They must never raise.


def guard_challenge_bound(tx: Transaction, data: EventData) -> bool:
    # RFC 7636 §4.4.1 / SECURITY.md 6: only an S256 challenge is ever stored.
    return len(tx.code_challenge) == 43 and is_acceptable_redirect_uri(tx.redirect_uri)


def guard_redirect_still_valid(tx: Transaction, data: EventData) -> bool:
    # SECURITY.md 3: the redirect predicate is applied again at consent.
    return data.now < tx.expires_at and is_acceptable_redirect_uri(tx.redirect_uri)


def guard_same_browser(tx: Transaction, data: EventData) -> bool:
    # SECURITY.md 12, 13: only the browser that approved consent may complete the callback.
    return (
        data.now < tx.expires_at
        and tx.browser_hash is not None
        and data.browser_hash is not None
        and hmac.compare_digest(tx.browser_hash, data.browser_hash)
    )


def guard_redemption_matches(tx: Transaction, data: EventData) -> bool:
    # RFC 6749 §4.1.3, RFC 8707 §2.2, RFC 7636 §4.6; SECURITY.md 5, 9.
    return (
        tx.code_expires_at is not None
        and data.now < tx.code_expires_at
        and data.client_id == tx.client_id
        and (
            data.redirect_uri == tx.redirect_uri
            if tx.redirect_uri_sent
            else data.redirect_uri in (None, tx.redirect_uri)
        )
        and data.resource in (None, tx.resource)
        and verify_code_verifier(data.code_verifier, tx.code_challenge)
    )


GUARDS: dict[str, Callable[[Transaction, EventData], bool]] = {
    "challenge_is_s256": guard_challenge_bound,
    "redirect_still_valid": guard_redirect_still_valid,
    "same_browser": guard_same_browser,
    "redemption_matches": guard_redemption_matches,
}


class TransactionMachine(StateMachine):
    """The declaration. Read top to bottom, it is the protocol."""

    registered = State(initial=True, value=TxState.registered.value)
    pkce_bound = State(value=TxState.pkce_bound.value)
    upstream_pending = State(value=TxState.upstream_pending.value)
    code_issued = State(value=TxState.code_issued.value)
    exchanged = State(value=TxState.exchanged.value)
    failed = State(final=True, value=TxState.failed.value)
    denied = State(final=True, value=TxState.denied.value)
    expired = State(final=True, value=TxState.expired.value)
    revoked = State(final=True, value=TxState.revoked.value)

    challenge_bound = registered.to(pkce_bound, cond="challenge_is_s256")
    consent_approved = pkce_bound.to(upstream_pending, cond="redirect_still_valid")
    consent_denied = pkce_bound.to(denied, cond="redirect_still_valid")
    upstream_returned = upstream_pending.to(code_issued, cond="same_browser")
    upstream_denied = upstream_pending.to(denied, cond="same_browser")
    upstream_failed = upstream_pending.to(failed)
    code_redeemed = code_issued.to(exchanged, cond="redemption_matches")
    code_replayed = exchanged.to(revoked)
    deadline_passed = (
        registered.to(expired)
        | pkce_bound.to(expired)
        | upstream_pending.to(expired)
        | code_issued.to(expired)
        | exchanged.to(expired)
    )
    aborted = (
        registered.to(failed)
        | pkce_bound.to(failed)
        | upstream_pending.to(failed)
        | code_issued.to(failed)
        | exchanged.to(failed)
    )

    def __init__(self, model: Any, tx: Transaction, data: EventData) -> None:
        self._tx = tx
        self._data = data
        super().__init__(model=model)

    def challenge_is_s256(self) -> bool:
        return GUARDS["challenge_is_s256"](self._tx, self._data)

    def redirect_still_valid(self) -> bool:
        return GUARDS["redirect_still_valid"](self._tx, self._data)

    def same_browser(self) -> bool:
        return GUARDS["same_browser"](self._tx, self._data)

    def redemption_matches(self) -> bool:
        return GUARDS["redemption_matches"](self._tx, self._data)


@attrs.frozen
class Row:
    target: TxState
    guard: str | None


def _extract_table() -> dict[tuple[TxState, TxEvent], Row]:
    table: dict[tuple[TxState, TxEvent], Row] = {}
    for state in TransactionMachine.states:
        for transition in state.transitions:
            conds = [str(c) for c in transition.cond]
            if len(conds) > 1:
                raise RuntimeError("one guard per row keeps the table auditable")
            key = (TxState(state.value), TxEvent(transition.event))
            if key in table:
                raise RuntimeError(f"duplicate row {key}")
            table[key] = Row(TxState(transition.target.value), conds[0] if conds else None)
    return table


#: (state, event) -> Row, extracted from ``TransactionMachine`` at import time.
TABLE: dict[tuple[TxState, TxEvent], Row] = _extract_table()


class Absorbed(Exception):
    """The transaction is in a final state: the event changes nothing (SECURITY.md 27)."""

    def __init__(self, state: TxState) -> None:
        super().__init__(state.value)
        self.state = state


def advance(tx: Transaction, event: TxEvent, data: EventData) -> TxState:
    """The next state for ``event``: the row's target, or ``failed`` (fail closed).

    Raises ``Absorbed`` when ``tx`` is already final. Pure; the caller persists the result with a
    compare-and-set on ``tx.version``.
    """
    state = TxState(tx.state)
    if state in FINAL_STATES:
        raise Absorbed(state)
    row = TABLE.get((state, event))
    if row is None:
        return TxState.failed
    if row.guard is not None and not GUARDS[row.guard](tx, data):
        return TxState.failed
    return row.target


class _Holder:
    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


def advance_with_machine(tx: Transaction, event: TxEvent, data: EventData) -> TxState:
    """``advance`` computed by python-statemachine itself (slow; used by the differential test)."""
    state = TxState(tx.state)  # decode through the enum first: a bogus value must not reach the lib
    holder = _Holder(state.value)
    machine = TransactionMachine(holder, tx, data)
    if state in FINAL_STATES:
        raise Absorbed(state)
    try:
        machine.send(event.value)
    except TransitionNotAllowed:
        return TxState.failed
    return TxState(holder.state)
