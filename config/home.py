"""``/``: a small landing page pointing at the API docs, the admin and the health check."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.http import require_safe

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>signalfan</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}}
code{{background:#f3f3f3;padding:0 .2em}}</style></head>
<body><h1>signalfan</h1>
<p>Strategies run once per candle close; their signals fan out to every subscriber.</p>
<ul>
<li><a href="{docs}">API documentation</a> (Swagger UI)</li>
<li><a href="{schema}">OpenAPI schema</a></li>
<li><a href="{admin}">Operators' admin</a></li>
<li><a href="{health}">Health check</a></li>
</ul>
<p>Start with <code>POST /api/auth/register</code> and <code>POST /api/auth/token</code>.</p>
</body></html>
"""


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse(
        PAGE.format(
            docs=reverse("api-docs"),
            schema=reverse("api-schema"),
            admin=reverse("admin:index"),
            health=reverse("health"),
        )
    )
