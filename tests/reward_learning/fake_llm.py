"""A scripted OpenAI-compatible chat server on 127.0.0.1 for the LLM tests (no network beyond loopback)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ScriptItem = str | int | dict


class FakeLLMServer:
    """Answers POST /v1/chat/completions from `script`, one item per request: a reply text, an HTTP error status,
    or a dict {"status", "headers", "delay", "reply"}. Past the script's end it answers HTTP 400. Every request body
    is kept in `requests`."""

    def __init__(self, script: list[ScriptItem]) -> None:
        self.script = list(script)
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body | {"_authorization": self.headers.get("Authorization")})
                item = owner.script.pop(0) if owner.script else {"status": 400, "reply": "script exhausted"}
                if not isinstance(item, dict):
                    item = {"reply": item} if isinstance(item, str) else {"status": item}
                time.sleep(item.get("delay", 0))
                status = item.get("status", 200)
                payload = ({"choices": [{"index": 0, "message": {"role": "assistant", "content": item["reply"]}}]}
                           if status == 200 else {"error": item.get("reply", f"scripted HTTP {status}")})
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for key, value in item.get("headers", {}).items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeLLMServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def user_turns(self, index: int) -> list[str]:
        """The user messages of request `index`."""
        return [m["content"] for m in self.requests[index]["messages"] if m["role"] == "user"]
