"""A bearer token's signature is checked once; the verified principal is reused only until the
token expires, and nothing else is ever accepted on the strength of the cache."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import jwt
import pytest

from app.auth import tokens
from app.auth.tokens import TokenCodec
from app.errors import Unauthorized
from app.settings import Settings


@pytest.fixture
def codec(tmp_path) -> TokenCodec:
    return TokenCodec(Settings(jwt_secret="s" * 48, data_dir=tmp_path))


def issue(codec: TokenCodec, ttl: timedelta = timedelta(hours=1)) -> str:
    return codec.encode(user_id=uuid.uuid4(), tenant_id=uuid.uuid4(), role="csm",
                        email="csm@demo.example", ttl=ttl)


def test_a_token_is_verified_once_then_recognised(codec, monkeypatch):
    token = issue(codec)
    first = codec.decode(token)
    calls = []
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: calls.append(a) or {})
    assert codec.decode(token) == first and calls == []


def test_a_recognised_token_is_refused_once_it_expires(codec):
    token = issue(codec, ttl=timedelta(seconds=1))
    codec.decode(token)
    time.sleep(1.2)
    with pytest.raises(Unauthorized):
        codec.decode(token)


def test_a_tampered_copy_of_a_recognised_token_is_refused(codec):
    token = issue(codec)
    codec.decode(token)
    head, body, signature = token.split(".")
    forged = f"{head}.{body}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(Unauthorized):
        codec.decode(forged)


def test_the_cache_is_bounded(codec, monkeypatch):
    monkeypatch.setattr(tokens, "VERIFIED_TOKENS", 5)
    for _ in range(20):
        codec.decode(issue(codec))
    assert len(codec._verified) == 5
