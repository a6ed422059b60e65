from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, URLResolver, include, path
from django.views import defaults
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from backtests.record_views import StrategyListingView
from backtests.views import BacktestListView
from config import admin as _user_admin  # noqa: F401  (registers the user admin)
from config.auth_views import RegisterView, TokenView
from config.health import health
from config.home import home
from config.metrics import metrics
from execution.admin import overview_view
from subscriptions.urls import credential_urlpatterns
from subscriptions.views import CredentialListCreateView

api_patterns: list[URLPattern | URLResolver] = [
    path("auth/register", RegisterView.as_view(), name="auth-register"),
    path("auth/token", TokenView.as_view(), name="auth-token"),
    path("strategies", StrategyListingView.as_view(), name="strategy-list"),
    path("strategies/", include("strategies.urls")),
    path("strategies/", include("subscriptions.urls")),
    path("strategies/", include("trades.urls")),
    path("strategies/", include("backtests.record_urls")),
    path("credentials", CredentialListCreateView.as_view(), name="credential-list"),
    path("credentials/", include(credential_urlpatterns)),
    path("backtests", BacktestListView.as_view(), name="backtest-list"),
    path("backtests/", include("backtests.urls")),
    path("", include("notifications.urls")),
    # The documentation is public: it describes the API, it does not use it.
    path("schema/", SpectacularAPIView.as_view(permission_classes=[]), name="api-schema"),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(url_name="api-schema", permission_classes=[]),
        name="api-docs",
    ),
]

urlpatterns = [
    path("", home, name="home"),
    path("health/", health, name="health"),
    # The operator overview: staff only, like the admin it is linked from.
    path("admin/overview/", admin.site.admin_view(overview_view), name="admin-overview"),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
]


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    # URLs that match no route (e.g. /api/strategies/-1) answer in the API's error format too.
    if _is_api(request):
        return JsonResponse({"detail": "Not found.", "code": "not_found", "errors": {}}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        body = {"detail": "Internal server error.", "code": "server_error", "errors": {}}
        return JsonResponse(body, status=500)
    return defaults.server_error(request)


handler404 = page_not_found
handler500 = server_error
