"""The worker's HTTP API (segments), called as a merchant's own tools would call it: used by
`shinsa segment` and the demo."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from streams.errors import UserError


def call(url: str, path: str, key: str | None, body: dict[str, Any] | None = None) -> Any:
    """POST (or GET without a body) to the API; its refusals become UserErrors."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}{path}", data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            payload = json.loads(exc.read())
        except ValueError:
            payload = {"error": f"HTTP {exc.code}"}
        lines = [f"{payload.get('error', exc.reason)} ({payload.get('reason', exc.code)})"]
        lines += [f"  {p}" for p in payload.get("problems", [])]
        raise UserError("\n".join(lines)) from None
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(
            f"no worker API at {url} ({getattr(exc, 'reason', exc)}): start `shinsa worker` "
            "or pass --url (SHINSA_API_PORT sets the worker's port)"
        ) from None
