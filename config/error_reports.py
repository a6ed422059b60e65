"""What error reports (Django's debug page, the admins' error mails) may show.

Django's filter hides settings, request metadata and cookies whose *names* look secret. Here
also every ``*_URL`` / DSN / database / broker setting or environment variable (runserver's
request metadata holds the whole environment) and any value that is a URL with credentials in
it, wherever it appears, traceback frames' local variables included.
"""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpRequest
from django.views.debug import SafeExceptionReporterFilter

# scheme://user:password@host/... or scheme://:password@host/...
URL_WITH_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s@]+@", re.IGNORECASE)


class SecretsHidingReporterFilter(SafeExceptionReporterFilter):
    hidden_settings = re.compile(
        "API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|URL|DSN|DATABASE|BROKER",
        flags=re.IGNORECASE,
    )

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        if isinstance(value, str) and URL_WITH_CREDENTIALS.search(value):
            return self.cleansed_substitute
        return super().cleanse_setting(key, value)

    def get_traceback_frame_variables(self, request: HttpRequest | None, tb_frame: Any) -> Any:
        # Django cleanses frame variables only in functions marked @sensitive_variables; a
        # connection URL or password held by a library's frame would be shown as it is.
        variables = super().get_traceback_frame_variables(request, tb_frame)
        return [(name, self.cleanse_setting(name, value)) for name, value in variables]
