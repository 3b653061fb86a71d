"""Rationale-engine test helpers: an expert report from contradiction/support probabilities and a
scripted OpenAI-compatible HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from vlgenrm.contracts import Choice, Claim, ClaimType, ExpertVerdict, VerdictLabel
from vlgenrm.experts.verify import build_report
from vlgenrm.retry import Backoff


def report(contra: dict[Choice, float], support: dict[Choice, float] | None = None):
    claims, verdicts = [], []
    for label, probs in ((VerdictLabel.CONTRADICTED, contra), (VerdictLabel.SUPPORTED, support or {})):
        for side, p in probs.items():
            cid = f"{side.value}-{label.value}"
            claims.append(Claim(id=cid, response=side, type=ClaimType.EXISTENCE, subject="dog", span=f"a {label.value} dog in {side.value}"))
            verdicts.append(ExpertVerdict(claim_id=cid, expert="detector", verdict=label, confidence=p))
    return build_report("r", "ex", claims, verdicts)


# -- openai-compatible endpoint on a local test server -------------------------------------------
Script = Callable[[int, dict], tuple[int, dict, bytes, float]]


def ok(body: dict) -> bytes:
    n = body.get("n", 1)
    text = body["messages"][0]["content"][1]["text"].split("\n")[0]
    return json.dumps({"choices": [{"index": i, "message": {"role": "assistant", "content": f"{text} #{i}\nVerdict: [[A]]"}} for i in range(n)]}).encode()


class Server:
    def __init__(self, script: Script) -> None:
        self.script, self.bodies, self.headers = script, [], []
        self.lock, self.inflight, self.max_inflight = threading.Lock(), 0, 0
        self.stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    index = len(outer.bodies)
                    outer.bodies.append(body)
                    outer.headers.append(dict(self.headers))
                    outer.inflight += 1
                    outer.max_inflight = max(outer.max_inflight, outer.inflight)
                try:
                    status, headers, payload, delay = outer.script(index, body)
                    outer.stop.wait(delay)
                    self.send_response(status)
                    for k, v in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (timeout)
                finally:
                    with outer.lock:
                        outer.inflight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


FAST = Backoff(max_attempts=3, initial_s=0.01, max_s=0.05, jitter=0)
