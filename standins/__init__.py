"""Local stand-ins for the systems of record the connectors call, so tests and the demo run offline.

`stripe_mock` builds and runs Stripe's own `stripe-mock` (the vendor's, generated from Stripe's OpenAPI
spec); `zendesk` is the project's own stand-in of Zendesk's REST API for the calls the connector
makes; `recording` is a pass-through proxy that records what a client sent (headers included).
`python -m standins NAME` runs one by hand and prints its URL and credential (`standins/__main__.py`).
"""

from standins._serve import serve_app
from standins.recording import RecordedRequest, RecordingProxy
from standins.stripe_mock import StripeMock, ensure_stripe_mock

__all__ = ["RecordedRequest", "RecordingProxy", "StripeMock", "ensure_stripe_mock", "serve_app"]
