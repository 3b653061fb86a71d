"""API keys, scopes and rate limits of the scoring endpoint."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
import yaml

from vlgenrm.errors import ConfigError
from vlgenrm.scoring.config import ApiKey, SecuritySettings
from vlgenrm.scoring.security import ALL_SCOPES, ApiKeyAuth, AuthError, Principal, RateLimiter, hash_key

ALICE_KEY = "alice-secret-key-0123456789"
BOB_KEY = "bob-secret-key-9876543210"


def settings(**overrides: object) -> SecuritySettings:
    keys = [
        ApiKey(name="alice", sha256=hash_key(ALICE_KEY)),
        ApiKey(name="bob", sha256=hash_key(BOB_KEY), scopes=["reward"], rate_per_s=2.0, burst=3),
    ]
    return SecuritySettings(**({"api_keys": keys} | overrides))


def refused(auth: ApiKeyAuth, authorization: str | None, header: str | None, scope: str = "score") -> AuthError:
    with pytest.raises(AuthError) as info:
        auth.authenticate(authorization, header, scope)
    return info.value


def test_hash_key_is_hex_sha256():
    assert hash_key("k") == hashlib.sha256(b"k").hexdigest()
    assert len(hash_key(ALICE_KEY)) == 64


def test_bearer_and_x_api_key_both_authenticate():
    auth = ApiKeyAuth(settings())
    by_bearer = auth.authenticate(f"Bearer {ALICE_KEY}", None, "score")
    by_header = auth.authenticate(None, ALICE_KEY, "compare")
    assert by_bearer == by_header
    assert by_bearer.name == "alice" and by_bearer.scopes == ALL_SCOPES
    assert auth.authenticate(f"bearer   {ALICE_KEY} ", None, "score").name == "alice"  # scheme is case-insensitive


def test_per_key_limits_override_the_defaults():
    auth = ApiKeyAuth(settings(rate_per_s=7.0, burst=11))
    assert auth.authenticate(None, ALICE_KEY, "score") == Principal("alice", ALL_SCOPES, 7.0, 11)
    assert auth.authenticate(None, BOB_KEY, "reward") == Principal("bob", frozenset({"reward"}), 2.0, 3)


def test_missing_key_is_401_unauthorized():
    auth = ApiKeyAuth(settings())
    for authorization, header in [(None, None), ("", ""), ("Bearer ", None), (f"Basic {ALICE_KEY}", None)]:
        error = refused(auth, authorization, header)
        assert (error.status, error.code) == (401, "unauthorized")
        assert error.message == "missing API key: send Authorization: Bearer <key> or X-API-Key"


def test_wrong_key_is_401_invalid_and_never_echoed():
    auth = ApiKeyAuth(settings())
    wrong = "not-a-key-" + ALICE_KEY
    for error in (refused(auth, f"Bearer {wrong}", None), refused(auth, None, wrong)):
        assert (error.status, error.code) == (401, "invalid_api_key")
        assert wrong not in error.message and wrong not in str(error)


def test_key_without_the_scope_is_403():
    auth = ApiKeyAuth(settings())
    assert auth.authenticate(None, BOB_KEY, "reward").name == "bob"
    error = refused(auth, None, BOB_KEY, "score")
    assert (error.status, error.code, error.message) == (403, "forbidden", "key 'bob' may not call score")
    assert BOB_KEY not in error.message


def test_keys_optional_gives_anonymous_unless_a_valid_key_is_sent():
    auth = ApiKeyAuth(settings(require_api_key=False, rate_per_s=5.0, burst=9))
    anonymous = Principal("anonymous", ALL_SCOPES, 5.0, 9)
    assert auth.authenticate(None, None, "score") == anonymous
    assert auth.authenticate(None, "unknown-key", "compare") == anonymous
    assert auth.authenticate(f"Bearer {ALICE_KEY}", None, "score").name == "alice"
    assert refused(auth, None, BOB_KEY, "score").status == 403  # a key still limits itself


def write_keys(path: Path, keys: list[dict]) -> None:
    path.write_text(yaml.safe_dump(keys))


def test_keys_file_is_loaded_and_reload_picks_up_new_keys(tmp_path):
    path = tmp_path / "keys.yaml"
    write_keys(path, [{"name": "carol", "sha256": hash_key("carol-key"), "scopes": ["score"]}])
    auth = ApiKeyAuth(settings(api_keys_file=path))
    assert auth.key_count == 3
    assert auth.authenticate(None, "carol-key", "score").name == "carol"
    assert refused(auth, None, "dave-key").code == "invalid_api_key"

    write_keys(path, [{"name": "dave", "sha256": hash_key("dave-key"), "burst": 2}])
    auth.reload()
    assert auth.authenticate(None, "dave-key", "reward") == Principal("dave", ALL_SCOPES, 20.0, 2)
    assert refused(auth, None, "carol-key").code == "invalid_api_key"  # removed from the file
    assert auth.authenticate(None, ALICE_KEY, "score").name == "alice"  # config keys stay


def test_reload_failure_keeps_the_previous_keys(tmp_path):
    path = tmp_path / "keys.yaml"
    write_keys(path, [{"name": "carol", "sha256": hash_key("carol-key")}])
    auth = ApiKeyAuth(settings(api_keys_file=path))
    path.write_text("- name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        auth.reload()
    assert auth.authenticate(None, "carol-key", "score").name == "carol"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "not found"),
        ("- name: [unclosed", "not valid YAML"),
        ("name: carol\n", "expected a YAML list"),
        ("- name: carol\n  sha256: not-hex\n", r"0\.sha256"),
        ("- name: carol\n  key: clear-text\n  sha256: " + "a" * 64 + "\n", r"0\.key: Extra inputs"),
    ],
)
def test_bad_keys_file_is_a_config_error_naming_path_and_problem(tmp_path, content, problem):
    path = tmp_path / "keys.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=problem) as info:
        ApiKeyAuth(SecuritySettings(api_keys_file=path))
    assert str(path) in str(info.value)
    assert "clear-text" not in str(info.value)


def test_one_digest_under_two_names_is_a_config_error():
    digest = hash_key("shared")
    with pytest.raises(ConfigError, match="same sha256"):
        ApiKeyAuth(SecuritySettings(api_keys=[ApiKey(name="a", sha256=digest), ApiKey(name="b", sha256=digest)]))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_allows_a_burst_then_says_how_long_to_wait():
    clock = FakeClock()
    limiter = RateLimiter(clock)
    p = Principal("p", ALL_SCOPES, rate_per_s=2.0, burst=3)
    assert [limiter.acquire(p) for _ in range(3)] == [None, None, None]
    assert limiter.acquire(p) == pytest.approx(0.5)  # one token per 0.5 s
    clock.now += 0.25
    assert limiter.acquire(p) == pytest.approx(0.25)
    clock.now += 0.25
    assert limiter.acquire(p) is None
    assert limiter.acquire(p) == pytest.approx(0.5)


def test_rate_limiter_refills_up_to_the_burst_only():
    clock = FakeClock()
    limiter = RateLimiter(clock)
    p = Principal("p", ALL_SCOPES, rate_per_s=10.0, burst=4)
    for _ in range(4):
        assert limiter.acquire(p) is None
    assert limiter.acquire(p) is not None
    clock.now += 3600  # an hour idle earns only `burst` tokens
    assert [limiter.acquire(p) for _ in range(5)].count(None) == 4


def test_rate_limiter_buckets_are_per_principal():
    clock = FakeClock()
    limiter = RateLimiter(clock)
    a = Principal("a", ALL_SCOPES, rate_per_s=1.0, burst=1)
    b = Principal("b", ALL_SCOPES, rate_per_s=1.0, burst=1)
    assert limiter.acquire(a) is None
    assert limiter.acquire(a) == pytest.approx(1.0)
    assert limiter.acquire(b) is None  # a's exhaustion does not touch b
    limiter.reset("a")
    assert limiter.acquire(a) is None


def test_rate_limiter_is_thread_safe():
    limiter = RateLimiter(lambda: 42.0)  # frozen clock: no refill, so exactly `burst` succeed
    p = Principal("p", ALL_SCOPES, rate_per_s=1.0, burst=250)
    results: list[float | None] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def worker() -> None:
        start.wait()
        mine = [limiter.acquire(p) for _ in range(50)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 800
    assert results.count(None) == 250
