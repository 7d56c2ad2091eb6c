"""A real HTTP server on a thread (``http.server``) that records every request and answers
the first ``refuse`` of them with 503, the rest with 200: the receiving end of upload tests."""
import http.server
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional


@dataclass
class Request:
    method: str
    path: str
    headers: Dict[str, str]
    body: bytes
    status: int


class Inbox:
    """Serves on 127.0.0.1 (``port`` 0: any free one) until :meth:`close`."""

    def __init__(self, refuse: int = 0, port: int = 0, refuse_status: int = 503) -> None:
        self.refuse = refuse
        self.refuse_status = refuse_status
        self.requests: List[Request] = []
        self.cond = threading.Condition()
        inbox = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with inbox.cond:
                    status = inbox.refuse_status if len(inbox.requests) < inbox.refuse else 200
                    inbox.requests.append(Request(self.command, self.path, dict(self.headers),
                                                  body, status))
                    inbox.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = _answer

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def accepted(self, method: str = "POST") -> List[Request]:
        with self.cond:
            return [r for r in self.requests if r.method == method and r.status == 200]

    def wait_for(self, test: Callable[[List[Request]], bool], timeout: float = 60.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: test(self.requests), timeout)

    def close(self, exc: Optional[BaseException] = None) -> None:
        self.server.shutdown()
        self.server.server_close()
