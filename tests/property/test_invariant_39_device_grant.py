"""spec/security.md 39 with Hypothesis: whatever the client, a second client, the user and the clock
do, in any order, polling never yields a token before the user approved and signed in, never twice,
and never to another client; user codes are uniform and read back however they are typed."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from oauthproxy_core.http import Response
from oauthproxy_core.user_codes import (
    _CUTOFF,
    ALPHABET,
    LENGTH,
    display_user_code,
    new_user_code,
    normalize_user_code,
)
from tests.harness import Browser, Harness, consent_fields
from tests.rfc.device_support import (
    device_harness,
    enter_code,
    poll,
    register_device_client,
    start,
)

ACTIONS = (
    "poll",
    "poll_other",
    "wait_short",
    "wait_interval",
    "wait_long",
    "approve",
    "deny",
    "wrong_code",
    "approve_then_fail_upstream",
)


def _user_step(h: Harness, user_code: str, decision: str, *, fail_upstream: bool = False) -> bool:
    """The user's part, tolerating every refusal; True only if the browser ended signed in."""
    browser = Browser()
    entered = enter_code(h, browser, user_code)
    if entered.status != 303:
        return False
    page = h.request(
        "GET", (entered.header("location") or "").removeprefix(h.config.issuer), browser=browser
    )
    if page.status != 200:
        return False
    decided = h.form("/consent", {**consent_fields(page), "decision": decision}, browser=browser)
    if decision != "approve" or decided.status != 303:
        return False
    callback = h.upstream.login(decided.header("location") or "")
    if fail_upstream:
        h.upstream.fail_token_with = _unavailable()
    try:
        done: Response = h.request("GET", callback.removeprefix(h.config.issuer), browser=browser)
    finally:
        h.upstream.fail_token_with = None
    return done.status == 200 and b"signed in" in done.body


def _unavailable() -> Any:
    from oauthproxy_core import HttpFailure  # noqa: PLC0415

    return HttpFailure(reason="timeout")


#: A sequence in which the user approves: the property must see the one token it allows.
APPROVED_THEN_POLLED = ["poll", "approve", "poll", "wait_interval", "poll", "poll_other"]


@settings(max_examples=60, deadline=None)
@example(actions=APPROVED_THEN_POLLED)
@given(actions=st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=14))
def test_invariant_39_polling_never_yields_a_token_before_approval_nor_twice(
    actions: list[str],
) -> None:
    h = device_harness(code_lifetime=120)
    owner = register_device_client(h)
    other = register_device_client(h)
    grant = json.loads(start(h, owner).body)
    approved = False
    tokens = 0
    for action in actions:
        if action == "poll":
            resp = poll(h, owner, grant["device_code"])
            if resp.status == 200:
                assert approved, "a token before the user approved"
                tokens += 1
                assert tokens == 1, "a device code redeemed twice"
            else:
                assert resp.status == 400
                assert json.loads(resp.body)["error"] in (
                    "authorization_pending",
                    "slow_down",
                    "access_denied",
                    "expired_token",
                    "invalid_grant",
                )
        elif action == "poll_other":
            resp = poll(h, other, grant["device_code"])
            assert resp.status == 400 and json.loads(resp.body)["error"] == "invalid_grant"
        elif action == "wait_short":
            h.clock.advance(2)
        elif action == "wait_interval":
            h.clock.advance(30)
        elif action == "wait_long":
            h.clock.advance(100)
        elif action == "approve":
            approved = _user_step(h, grant["user_code"], "approve") or approved
        elif action == "deny":
            assert not _user_step(h, grant["user_code"], "deny")
        elif action == "wrong_code":
            assert enter_code(h, Browser(), "ZZZZ-ZZZZ").status in (400, 429)
        else:
            assert not _user_step(h, grant["user_code"], "approve", fail_upstream=True)
    if actions == APPROVED_THEN_POLLED:
        assert approved and tokens == 1


@given(
    seed=st.integers(min_value=0, max_value=2**32),
    noise=st.lists(st.sampled_from("- \t"), max_size=20),
)
def test_invariant_39_user_codes_are_uniform_and_read_back_however_typed(
    seed: int, noise: list[str]
) -> None:
    rng = random.Random(seed)
    code = new_user_code(rng.randbytes)
    assert len(code) == LENGTH and set(code) <= set(ALPHABET)
    typed = list(display_user_code(code).lower() if seed % 2 else display_user_code(code))
    for ch in noise:
        typed.insert(rng.randrange(len(typed) + 1), ch)
    assert normalize_user_code("".join(typed)) == code
    # One character changed is another code, never this one.
    wrong = ALPHABET[(ALPHABET.index(code[0]) + 1) % len(ALPHABET)] + code[1:]
    assert normalize_user_code(wrong) != code


def test_invariant_39_every_character_is_equally_likely() -> None:
    """The bytes kept (below the cutoff) map onto the alphabet evenly, and the others are drawn
    again: a source that returns every byte value once yields each character equally often."""
    counts: Counter[str] = Counter()
    values = bytes(range(256))
    position = 0

    def every_byte(n: int) -> bytes:
        nonlocal position
        out = bytes(values[(position + i) % 256] for i in range(n))
        position += n
        return out

    for _ in range(_CUTOFF * 4 // LENGTH):
        counts.update(new_user_code(every_byte))
    assert set(counts) == set(ALPHABET)
    assert max(counts.values()) - min(counts.values()) <= LENGTH * 2
