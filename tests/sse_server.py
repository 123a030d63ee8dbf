"""A scripted streaming HTTP server for client tests: it plays back SSE lines with set delays.

A test double for what a real engine cannot do on demand (send odd chunk shapes, crash mid-stream).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def chunk(
    content: str | None = None, role: str | None = None, finish: str | None = None, usage: dict | None = None
) -> str:
    delta = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    body = {
        "id": "t",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        body = {"id": "t", "object": "chat.completion.chunk", "choices": [], "usage": usage}
    return "data: " + json.dumps(body)


class ScriptedServer:
    """script: list of (delay_s, line) played per request; line None closes the connection abruptly."""

    def __init__(self, script: list[tuple[float, str | None]], status: int = 200):
        self.script = script
        self.status = status
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # close-delimited body: no chunked framing to get wrong

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                server.requests.append(json.loads(self.rfile.read(length)))
                self.send_response(server.status)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                if server.status != 200:
                    self.wfile.write(b'{"error": "bad request"}')
                    return
                for delay, line in server.script:
                    time.sleep(delay)
                    if line is None:
                        return  # crash: close without [DONE]
                    self.wfile.write((line + "\n\n").encode())
                    self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/chat/completions"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
