"""The approver page the approval service serves at `/`: one HTML file, under headers that let only its own script run."""

import base64
import hashlib
import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

__all__ = ["PAGE", "page_route"]

PAGE = Path(__file__).parent / "web" / "index.html"


def _page_headers(html: str) -> dict[str, str]:
    """Headers of the approver page: only its own inline script runs, nothing loads from elsewhere, no framing.

    Framing is refused because an approve button inside someone else's frame could be clickjacked.
    """
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts)
    csp = (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    return {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
    }


def page_route(api: FastAPI) -> None:
    """Serve the page at `/` (outside the API's schema)."""

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        html = PAGE.read_text()
        return HTMLResponse(html, headers=_page_headers(html))
