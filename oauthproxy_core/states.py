"""Lifecycles: the ONLY place where states, transitions and the record changes they make are declared.

Theory of operation (h11's "Rule 1"). Two records have a lifecycle, and each is declared here once as
a python-statemachine ``StateMachine`` (never the permissive ``StateChart``):

*Authorization transaction* (``TransactionMachine``). Created when a registered client's
authorization request passes client and redirect-URI validation (``registered``); its PKCE challenge
is bound (``pkce_bound``, RFC 7636 §4.4). The user approves the client on the proxy's own consent page,
and only then does the proxy create its upstream ``state`` and send the browser to the provider
(``upstream_pending``; spec/security.md 11). The provider's callback, arriving from the same browser,
lets the proxy redeem the upstream code and issue its own code (``code_issued``). The client's token
request redeems that code exactly once (``exchanged``, RFC 6749 §4.1.2 "MUST NOT use the authorization
code more than once"). A second redemption moves the transaction to ``revoked``.

*Device authorization* (``DeviceMachine``, RFC 8628): created ``pending`` when a client asks for a
device code (§3.1-3.2). The user types the user code on the proxy's verification page (§3.3): the
code is used up and the device moves to ``verifying``, linked to an authorization transaction that
runs the same consent page and upstream sign-in. A sign-in the ``[access]`` rules admit makes it
``approved`` (``sign_in_approved``: the identity and the sealed upstream tokens move in); a denial
anywhere makes it ``denied`` (``sign_in_denied``). The client polls meanwhile (§3.4-3.5:
``polled``, or ``slowed_down`` when it polls faster than its interval, which also lengthens the
interval); once ``approved``, one poll redeems it (``redeemed``, final: spec/security.md 39, a
device code yields tokens at most once).

*Grant* (``GrantMachine``), the refresh-token family created at redemption (OAuth 2.1 §4.3.1, RFC 9700
§4.14.2): ``active`` while it rotates (``refresh_rotated``), while the proxy refreshes the user's
upstream token (``upstream_refreshed``) and while it re-validates the user with the provider at refresh
(``revalidation_started``, then ``revalidated`` or ``revalidation_deferred``); ``revoked`` for good
when the client or an operator revokes it, when a rotated refresh token or the code is replayed, when
the provider refuses it, or when the ``[access]`` rules no longer admit the user (``access_withdrawn``).

Rules, in the style of h2's state tables:

- transitions only move forward; final states absorb every event (nothing changes, the caller gets a
  typed error: ``Absorbed``);
- an event with no row in a non-final state fails closed: the record becomes ``failed`` (transactions)
  or ``revoked`` (grants);
- a row's guard is a one-line call into a pure validator; a false guard also fails closed;
- time is an input: once a record's deadline has passed, whatever event arrives is applied as
  ``deadline_passed`` (the transaction becomes ``expired``), so advancing the clock never revives a
  record (spec/security.md 27);
- the machine owns the write (h11 ``_state.py``): ``step`` returns the next record, with the state and
  version set here and only the fields the row declares in ``WRITES`` changed. Handlers persist what
  ``step`` returns with a compare-and-set on the old version; they never set a state themselves, and a
  change to an undeclared field is a programming error (``UndeclaredWriteError``).

The hot path runs on tables extracted from the declarations at import time;
``tests/core/test_states.py`` proves that tables and declarations agree on every (state, event, guard
outcome), and ``spec/transitions.md`` is generated from them.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
from statemachine import State, StateMachine
from statemachine.exceptions import TransitionNotAllowed

from .pkce import verify_code_verifier
from .redirect_uris import is_acceptable_redirect_uri

if TYPE_CHECKING:
    from .records import DeviceAuthorization, Grant, Transaction


#: Seconds a transaction is kept past its deadline, so that a late consent or callback is answered
#: (and audited) as ``expired`` rather than unknown. Short: it holds no secret the flow still needs.
EXPIRY_NOTICE = 300


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
    """Inputs to the transaction machine, named for what happened."""

    challenge_bound = "challenge_bound"
    consent_approved = "consent_approved"
    consent_denied = "consent_denied"
    upstream_returned = "upstream_returned"
    upstream_denied = "upstream_denied"
    upstream_failed = "upstream_failed"
    code_redeemed = "code_redeemed"
    code_replayed = "code_replayed"
    deadline_passed = "deadline_passed"
    client_removed = "client_removed"
    #: spec/security.md 33: the provider signed the user in, but no ``[access]`` rule admits them.
    access_refused = "access_refused"
    #: RFC 8628 §3.3: the sign-in of a device authorization ended well; no code is issued, the
    #: identity moves to the device record (``DeviceEvent.approved``).
    device_signed_in = "device_signed_in"


class DeviceState(enum.Enum):
    pending = "pending"
    verifying = "verifying"
    approved = "approved"
    redeemed = "redeemed"
    denied = "denied"
    expired = "expired"
    failed = "failed"


class DeviceEvent(enum.Enum):
    """Inputs to the device authorization machine (RFC 8628), named for what happened."""

    #: §3.3: the user typed the user code on the verification page (the code is used up).
    user_code_entered = "user_code_entered"
    #: §3.4: the client polled no faster than its interval.
    polled = "polled"
    #: §3.5 ``slow_down``: it polled too fast; the interval grows by 5 seconds.
    slowed_down = "slowed_down"
    #: The user approved and the provider signed them in, admitted by ``[access]``.
    sign_in_approved = "sign_in_approved"
    #: The user denied on the consent page, the provider refused, or ``[access]`` did.
    sign_in_denied = "sign_in_denied"
    #: §3.5: the approved device code was exchanged for tokens (once: spec/security.md 39).
    token_issued = "token_issued"
    deadline_passed = "deadline_passed"
    client_removed = "client_removed"


class GrantState(enum.Enum):
    active = "active"
    revoked = "revoked"


class GrantEvent(enum.Enum):
    """Inputs to the grant machine, named for what happened."""

    refresh_rotated = "refresh_rotated"
    upstream_refreshed = "upstream_refreshed"
    revocation_requested = "revocation_requested"
    refresh_replayed = "refresh_replayed"
    code_replayed = "code_replayed"
    upstream_refused = "upstream_refused"
    #: RFC 7592 §2.3: the grant's client was deleted (found under its client's revocation marker).
    client_deleted = "client_deleted"
    #: Re-validation at refresh (revalidation.py): one instance takes the grant for a moment...
    revalidation_started = "revalidation_started"
    #: ...the provider confirmed the user and the rules still admit them...
    revalidated = "revalidated"
    #: ...or the provider could not be asked (transient): the hold is released, nothing revoked...
    revalidation_deferred = "revalidation_deferred"
    #: ...or the rules no longer admit the user (spec/security.md 33).
    access_withdrawn = "access_withdrawn"
    #: An operator revoked the grant (``oauthproxy grants revoke``), not the client nor a replay.
    operator_revoked = "operator_revoked"


@attrs.frozen(kw_only=True)
class EventData:
    """What a guard may look at besides the record. Fields unused by an event stay ``None``."""

    now: int
    browser_hash: str | None = attrs.field(default=None, repr=False)
    client_id: str | None = None
    redirect_uri: str | None = None
    resource: str | None = None
    code_verifier: str | None = attrs.field(default=None, repr=False)
    #: SHA-256 of a presented refresh token's secret (grant events).
    presented_hash: str | None = attrs.field(default=None, repr=False)
    #: The transaction that completes a device authorization (device events).
    txn_id: str | None = None


# Guards: one line each, calling the pure validators (spec/style.md). They must never raise. Deadlines are
# not guards: ``step`` applies them before any row is looked up.


def guard_challenge_bound(tx: Transaction, data: EventData) -> bool:
    # RFC 7636 §4.4.1 / spec/security.md 6: only an S256 challenge is ever stored.
    return len(tx.code_challenge) == 43 and is_acceptable_redirect_uri(tx.redirect_uri)


def guard_redirect_still_valid(tx: Transaction, data: EventData) -> bool:
    # spec/security.md 3: the redirect predicate is applied again at consent.
    return is_acceptable_redirect_uri(tx.redirect_uri)


def guard_same_browser(tx: Transaction, data: EventData) -> bool:
    # spec/security.md 12, 13: only the browser that approved consent may complete the callback.
    return (
        tx.browser_hash is not None
        and data.browser_hash is not None
        and hmac.compare_digest(tx.browser_hash, data.browser_hash)
    )


def guard_redemption_matches(tx: Transaction, data: EventData) -> bool:
    # RFC 6749 §4.1.3, RFC 8707 §2.2, RFC 7636 §4.6; spec/security.md 5, 9.
    return (
        tx.code_expires_at is not None
        and data.client_id == tx.client_id
        and (
            data.redirect_uri == tx.redirect_uri
            if tx.redirect_uri_sent
            else data.redirect_uri in (None, tx.redirect_uri)
        )
        and data.resource in (None, tx.resource)
        and verify_code_verifier(data.code_verifier, tx.code_challenge)
    )


def guard_presented_is_current(grant: Grant, data: EventData) -> bool:
    # OAuth 2.1 §4.3.1: only the newest refresh token of a family rotates it (spec/security.md 20).
    return (
        bool(grant.refresh_hash)
        and data.presented_hash is not None
        and hmac.compare_digest(grant.refresh_hash, data.presented_hash)
    )


def guard_device_redeemer(device: DeviceAuthorization, data: EventData) -> bool:
    # RFC 8628 §3.4 with RFC 6749 §5.2: only the client the device code was issued to redeems it.
    return data.client_id is not None and data.client_id == device.client_id


def guard_device_transaction(device: DeviceAuthorization, data: EventData) -> bool:
    # The sign-in that decides is the one started from this device's user code, no other.
    return device.txn_id is not None and data.txn_id == device.txn_id


TX_GUARDS: dict[str, Callable[[Transaction, EventData], bool]] = {
    "challenge_is_s256": guard_challenge_bound,
    "redirect_still_valid": guard_redirect_still_valid,
    "same_browser": guard_same_browser,
    "redemption_matches": guard_redemption_matches,
}
#: Kept under its historical name: the transaction machine's guards.
GUARDS = TX_GUARDS

GRANT_GUARDS: dict[str, Callable[[Grant, EventData], bool]] = {
    "presented_is_current": guard_presented_is_current,
}

DEVICE_GUARDS: dict[str, Callable[[DeviceAuthorization, EventData], bool]] = {
    "same_client": guard_device_redeemer,
    "its_transaction": guard_device_transaction,
}


class TransactionMachine(StateMachine):
    """The authorization transaction. Read top to bottom, it is the protocol."""

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
    access_refused = upstream_pending.to(denied, cond="same_browser")
    # RFC 8628: a device's sign-in ends here; the device record, not a code, carries the result.
    device_signed_in = upstream_pending.to(exchanged, cond="same_browser")
    upstream_failed = upstream_pending.to(failed)
    code_redeemed = code_issued.to(exchanged, cond="redemption_matches")
    code_replayed = exchanged.to(revoked)
    # An exchanged transaction has no deadline: it is kept only to recognise a replayed code.
    deadline_passed = (
        registered.to(expired)
        | pkce_bound.to(expired)
        | upstream_pending.to(expired)
        | code_issued.to(expired)
    )
    # RFC 7592 §2.3: a deleted client's unfinished authorizations end with it.
    client_removed = pkce_bound.to(failed) | upstream_pending.to(failed) | code_issued.to(failed)

    def __init__(self, model: Any, tx: Transaction, data: EventData) -> None:
        self._tx = tx
        self._data = data
        super().__init__(model=model)

    def challenge_is_s256(self) -> bool:
        return TX_GUARDS["challenge_is_s256"](self._tx, self._data)

    def redirect_still_valid(self) -> bool:
        return TX_GUARDS["redirect_still_valid"](self._tx, self._data)

    def same_browser(self) -> bool:
        return TX_GUARDS["same_browser"](self._tx, self._data)

    def redemption_matches(self) -> bool:
        return TX_GUARDS["redemption_matches"](self._tx, self._data)


class GrantMachine(StateMachine):
    """The refresh-token family. Every revoking event is named so that audit says why."""

    active = State(initial=True, value=GrantState.active.value)
    revoked = State(final=True, value=GrantState.revoked.value)

    refresh_rotated = active.to(active, cond="presented_is_current")
    upstream_refreshed = active.to(active)
    revocation_requested = active.to(revoked)
    refresh_replayed = active.to(revoked)
    code_replayed = active.to(revoked)
    upstream_refused = active.to(revoked)
    client_deleted = active.to(revoked)
    revalidation_started = active.to(active, cond="presented_is_current")
    revalidated = active.to(active)
    revalidation_deferred = active.to(active)
    access_withdrawn = active.to(revoked)
    operator_revoked = active.to(revoked)

    def __init__(self, model: Any, grant: Grant, data: EventData) -> None:
        self._grant = grant
        self._data = data
        super().__init__(model=model)

    def presented_is_current(self) -> bool:
        return GRANT_GUARDS["presented_is_current"](self._grant, self._data)


class DeviceMachine(StateMachine):
    """The device authorization (RFC 8628). Polling never leaves ``pending``/``verifying`` except
    through an approval, and ``redeemed`` is final: no token before approval, never two."""

    pending = State(initial=True, value=DeviceState.pending.value)
    verifying = State(value=DeviceState.verifying.value)
    approved = State(value=DeviceState.approved.value)
    redeemed = State(final=True, value=DeviceState.redeemed.value)
    denied = State(final=True, value=DeviceState.denied.value)
    expired = State(final=True, value=DeviceState.expired.value)
    failed = State(final=True, value=DeviceState.failed.value)

    user_code_entered = pending.to(verifying)
    polled = pending.to(pending) | verifying.to(verifying)
    slowed_down = pending.to(pending) | verifying.to(verifying)
    sign_in_approved = verifying.to(approved, cond="its_transaction")
    sign_in_denied = verifying.to(denied, cond="its_transaction")
    token_issued = approved.to(redeemed, cond="same_client")
    deadline_passed = pending.to(expired) | verifying.to(expired) | approved.to(expired)
    client_removed = pending.to(failed) | verifying.to(failed) | approved.to(failed)

    def __init__(self, model: Any, device: DeviceAuthorization, data: EventData) -> None:
        self._device = device
        self._data = data
        super().__init__(model=model)

    def same_client(self) -> bool:
        return DEVICE_GUARDS["same_client"](self._device, self._data)

    def its_transaction(self) -> bool:
        return DEVICE_GUARDS["its_transaction"](self._device, self._data)


# What each event may change besides ``state`` and ``version``. Anything else is refused by ``step``.
_TX_ISSUE_CODE = frozenset(
    {
        "code_hash",
        "code_expires_at",
        "grant_id",
        "subject",
        "claims",
        "groups",
        "upstream_sealed",
        "upstream_verifier_sealed",
    }
)
TX_WRITES: dict[TxEvent, frozenset[str]] = {
    TxEvent.challenge_bound: frozenset(),
    # spec/security.md 11: the browser binding and the upstream state exist from approval on.
    # "scopes": the user may decline optional scopes on the consent page (a subset, never more).
    TxEvent.consent_approved: frozenset(
        {"browser_hash", "upstream_state_hash", "upstream_verifier_sealed", "scopes"}
    ),
    TxEvent.consent_denied: frozenset(),
    TxEvent.upstream_returned: _TX_ISSUE_CODE,
    TxEvent.upstream_denied: frozenset(),
    TxEvent.upstream_failed: frozenset(),
    TxEvent.code_redeemed: frozenset(),
    TxEvent.code_replayed: frozenset(),
    TxEvent.deadline_passed: frozenset(),
    TxEvent.client_removed: frozenset(),
    # Nothing of the refused user is written (spec/security.md 33): no subject, no claims.
    TxEvent.access_refused: frozenset({"upstream_verifier_sealed"}),
    TxEvent.device_signed_in: frozenset({"upstream_verifier_sealed"}),
}

DEVICE_WRITES: dict[DeviceEvent, frozenset[str]] = {
    # The user code has had its one use: only its transaction completes the device.
    DeviceEvent.user_code_entered: frozenset({"txn_id"}),
    DeviceEvent.polled: frozenset({"last_polled_at"}),
    # RFC 8628 §3.5: "the interval MUST be increased by 5 seconds for this and all subsequent
    # requests".
    DeviceEvent.slowed_down: frozenset({"last_polled_at", "interval"}),
    DeviceEvent.sign_in_approved: frozenset(
        {"grant_id", "subject", "claims", "groups", "scopes", "upstream_sealed"}
    ),
    DeviceEvent.sign_in_denied: frozenset(),
    # A redeemed device keeps no sealed secret: nothing is left that could be handed out again.
    DeviceEvent.token_issued: frozenset({"upstream_sealed"}),
    DeviceEvent.deadline_passed: frozenset(),
    DeviceEvent.client_removed: frozenset(),
}

#: A revoked grant keeps no sealed secret: nothing is left that could be served or replayed.
_GRANT_REVOKE = frozenset({"upstream_sealed", "previous_response_sealed"})
GRANT_WRITES: dict[GrantEvent, frozenset[str]] = {
    GrantEvent.refresh_rotated: frozenset(
        {
            "generation",
            "refresh_hash",
            "previous_hash",
            "grace_until",
            "previous_response_sealed",
            "retired_hashes",
            "expires_at",
        }
    ),
    GrantEvent.upstream_refreshed: frozenset({"upstream_sealed"}),
    GrantEvent.revocation_requested: _GRANT_REVOKE,
    GrantEvent.refresh_replayed: _GRANT_REVOKE,
    GrantEvent.code_replayed: _GRANT_REVOKE,
    GrantEvent.upstream_refused: _GRANT_REVOKE,
    GrantEvent.client_deleted: _GRANT_REVOKE,
    GrantEvent.revalidation_started: frozenset({"revalidating_until"}),
    GrantEvent.revalidated: frozenset(
        {"confirmed_at", "upstream_sealed", "claims", "groups", "revalidating_until"}
    ),
    GrantEvent.revalidation_deferred: frozenset({"revalidating_until", "upstream_sealed"}),
    GrantEvent.access_withdrawn: _GRANT_REVOKE,
    GrantEvent.operator_revoked: _GRANT_REVOKE,
}


@attrs.frozen
class Row:
    target: Any  # a member of the machine's state enum
    guard: str | None
    writes: frozenset[str] = frozenset()


StateT = TypeVar("StateT", TxState, GrantState, DeviceState)
EventT = TypeVar("EventT", TxEvent, GrantEvent, DeviceEvent)
RecordT = TypeVar("RecordT")


class Absorbed(Exception):
    """The record is in a final state: the event changes nothing (spec/security.md 27)."""

    def __init__(self, state: enum.Enum) -> None:
        super().__init__(state.value)
        self.state = state


class UndeclaredWriteError(RuntimeError):
    """A handler tried to change a field that the transition's row does not declare (a bug)."""


@attrs.frozen
class Step(Generic[RecordT]):
    """The result of one transition: the record to persist (version + 1) and what happened."""

    #: The event actually applied: ``deadline_passed`` when the record's deadline had passed.
    event: enum.Enum
    record: RecordT
    #: True when no row or a false guard failed the record closed.
    failed_closed: bool

    @property
    def state(self) -> str:
        return self.record.state  # type: ignore[attr-defined,no-any-return]


class _Holder:
    """python-statemachine's model: a one-slot mutable holder (a frozen record is refused)."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


class Lifecycle(Generic[StateT, EventT, RecordT]):
    """One declared machine with its extracted table and the ``step`` that owns the record change."""

    def __init__(
        self,
        *,
        machine: type[StateMachine],
        states: type[StateT],
        events: type[EventT],
        guards: Mapping[str, Callable[[RecordT, EventData], bool]],
        writes: Mapping[EventT, frozenset[str]],
        fail_state: StateT,
        deadline: Callable[[RecordT], int | None],
        expiry_event: EventT | None,
    ) -> None:
        self.machine = machine
        self.states: type[StateT] = states
        self.events: type[EventT] = events
        self.guards = guards
        self.writes: dict[EventT, frozenset[str]] = dict(writes)
        self.fail_state: StateT = fail_state
        self.deadline = deadline
        self.expiry_event: EventT | None = expiry_event
        missing = set(events) - set(writes)
        if missing:
            raise RuntimeError(
                f"events without declared writes: {sorted(e.value for e in missing)}"
            )
        self.final: frozenset[StateT] = frozenset(
            states(s.value) for s in machine.states if s.final
        )
        self.table: dict[tuple[StateT, EventT], Row] = {}
        for state in machine.states:
            for transition in state.transitions:
                conds = [str(c) for c in transition.cond]
                if len(conds) > 1:
                    raise RuntimeError("one guard per row keeps the table auditable")
                event = events(transition.event)
                key = (states(state.value), event)
                if key in self.table:
                    raise RuntimeError(f"duplicate row {key}")
                self.table[key] = Row(
                    states(transition.target.value), conds[0] if conds else None, writes[event]
                )

    def _effective_event(self, record: RecordT, event: EventT, now: int) -> EventT:
        if self.expiry_event is None:
            return event
        deadline = self.deadline(record)
        return self.expiry_event if deadline is not None and now >= deadline else event

    def next_state(self, record: RecordT, event: EventT, data: EventData) -> StateT:
        """The state ``step`` would move to. Raises ``Absorbed`` for a final record."""
        state = self.states(record.state)  # type: ignore[attr-defined]
        if state in self.final:
            raise Absorbed(state)
        event = self._effective_event(record, event, data.now)
        row = self.table.get((state, event))
        if row is None or (row.guard is not None and not self.guards[row.guard](record, data)):
            return self.fail_state
        target: StateT = row.target
        return target

    def step(
        self, record: RecordT, event: EventT, data: EventData, **changes: Any
    ) -> Step[RecordT]:
        """Apply ``event``: the next record with its new state and version and the row's changes.

        ``changes`` must name only fields the row declares; they are dropped when the step fails
        closed or the deadline has passed (a refused event writes nothing but the state).
        Raises ``Absorbed`` when ``record`` is already final.
        """
        state = self.states(record.state)  # type: ignore[attr-defined]
        if state in self.final:
            raise Absorbed(state)
        applied = self._effective_event(record, event, data.now)
        row = self.table.get((state, applied))
        failed = row is None or (row.guard is not None and not self.guards[row.guard](record, data))
        undeclared = set(changes) - self.writes[event]
        if undeclared:
            raise UndeclaredWriteError(f"{event.value} does not write {sorted(undeclared)}")
        if failed or row is None:
            target, kept = self.fail_state, {}
        else:
            target, kept = row.target, (changes if applied is event else {})
        version: int = record.version  # type: ignore[attr-defined]
        updated = attrs.evolve(  # type: ignore[misc]
            record, state=target.value, version=version + 1, **kept
        )
        return Step(event=applied, record=updated, failed_closed=failed)

    def next_state_with_machine(self, record: RecordT, event: EventT, data: EventData) -> StateT:
        """``next_state`` computed by python-statemachine itself (slow; the differential tests)."""
        # Decode through the enum first: a bogus stored value must never reach the library.
        state = self.states(record.state)  # type: ignore[attr-defined]
        if state in self.final:
            raise Absorbed(state)
        holder = _Holder(state.value)
        machine = self.machine(holder, record, data)  # type: ignore[arg-type]
        try:
            machine.send(self._effective_event(record, event, data.now).value)
        except TransitionNotAllowed:
            return self.fail_state
        after: StateT = self.states(holder.state)
        return after


def _tx_deadline(tx: Transaction) -> int | None:
    if tx.state == TxState.exchanged.value:
        return None  # kept only so that a replayed code is recognised and punished
    if tx.state == TxState.code_issued.value and tx.code_expires_at is not None:
        return tx.code_expires_at  # the code's own lifetime (spec/security.md 9)
    return tx.expires_at


def _no_deadline(_grant: Grant) -> int | None:
    # A grant's sliding expiry is its record's TTL: the store never returns an expired grant.
    return None


TRANSACTION: Lifecycle[TxState, TxEvent, Transaction] = Lifecycle(
    machine=TransactionMachine,
    states=TxState,
    events=TxEvent,
    guards=TX_GUARDS,
    writes=TX_WRITES,
    fail_state=TxState.failed,
    deadline=_tx_deadline,
    expiry_event=TxEvent.deadline_passed,
)


def _device_deadline(device: DeviceAuthorization) -> int | None:
    if device.state == DeviceState.redeemed.value:
        return None
    return device.expires_at  # RFC 8628 §3.2 ``expires_in``: approved or not, it ends then


DEVICE: Lifecycle[DeviceState, DeviceEvent, DeviceAuthorization] = Lifecycle(
    machine=DeviceMachine,
    states=DeviceState,
    events=DeviceEvent,
    guards=DEVICE_GUARDS,
    writes=DEVICE_WRITES,
    fail_state=DeviceState.failed,
    deadline=_device_deadline,
    expiry_event=DeviceEvent.deadline_passed,
)
GRANT: Lifecycle[GrantState, GrantEvent, Grant] = Lifecycle(
    machine=GrantMachine,
    states=GrantState,
    events=GrantEvent,
    guards=GRANT_GUARDS,
    writes=GRANT_WRITES,
    fail_state=GrantState.revoked,
    deadline=_no_deadline,
    expiry_event=None,
)

#: (state, event) -> Row for the transaction machine, extracted at import time.
TABLE: dict[tuple[TxState, TxEvent], Row] = TRANSACTION.table
GRANT_TABLE: dict[tuple[GrantState, GrantEvent], Row] = GRANT.table
FINAL_STATES: frozenset[TxState] = TRANSACTION.final


def new_transaction(**fields: Any) -> Transaction:
    """A transaction in the machine's initial state (the only place a state is chosen by hand)."""
    # records imports this module for its enums, so the import waits until a transaction is made.
    from .records import Transaction  # noqa: PLC0415

    return Transaction(state=TxState.registered.value, **fields)


def advance(tx: Transaction, event: TxEvent, data: EventData) -> TxState:
    """The next state of ``tx`` for ``event`` (no record change); see ``Lifecycle.next_state``."""
    return TRANSACTION.next_state(tx, event, data)


def advance_with_machine(tx: Transaction, event: TxEvent, data: EventData) -> TxState:
    return TRANSACTION.next_state_with_machine(tx, event, data)


def step(tx: Transaction, event: TxEvent, data: EventData, **changes: Any) -> Step[Transaction]:
    return TRANSACTION.step(tx, event, data, **changes)


def grant_step(grant: Grant, event: GrantEvent, data: EventData, **changes: Any) -> Step[Grant]:
    return GRANT.step(grant, event, data, **changes)


def new_device(**fields: Any) -> DeviceAuthorization:
    """A device authorization in the machine's initial state."""
    from .records import DeviceAuthorization  # noqa: PLC0415

    return DeviceAuthorization(state=DeviceState.pending.value, **fields)


def device_step(
    device: DeviceAuthorization, event: DeviceEvent, data: EventData, **changes: Any
) -> Step[DeviceAuthorization]:
    return DEVICE.step(device, event, data, **changes)
