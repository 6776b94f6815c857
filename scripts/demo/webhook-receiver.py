#!/usr/bin/env python3
"""The demo's webhook endpoint: accepts Picket's POSTs, checks their Standard Webhooks signature
and prints one line per webhook.

    webhook-receiver.py PORT SECRET_FILE

The signing secret (`whsec_...`, shown once when the endpoint is created) is read from SECRET_FILE
at each request, so the receiver can start before the endpoint exists. Standard library only.
"""

import base64
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
SECRET_FILE = sys.argv[2]
TOLERANCE_SECONDS = 300


def signature_valid(headers, body):
    """Standard Webhooks v1: HMAC-SHA256 over `id.timestamp.body`, any listed signature matching."""
    try:
        with open(SECRET_FILE, encoding="utf-8") as file:
            secret = file.read().strip()
    except OSError:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    webhook_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = headers.get("webhook-signature", "").split()
    return any(
        hmac.compare_digest(candidate.removeprefix("v1,"), expected)
        for candidate in offered
        if candidate.startswith("v1,")
    )


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        valid = signature_valid(self.headers, body)
        self.send_response(204 if valid else 401)
        self.end_headers()
        try:
            event = json.loads(body)
        except ValueError:
            event = {}
        data = event.get("data") or {}
        incident = data.get("incident") or {}
        summary = incident.get("title") or data.get("title") or data.get("incidentId") or ""
        print(
            f"webhook {event.get('type', '?'):<28} signature {'valid' if valid else 'INVALID'}"
            f"  {summary}",
            flush=True,
        )

    def log_message(self, *_):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
