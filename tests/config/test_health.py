import pytest
from django.test import Client


@pytest.mark.django_db
def test_health_reports_database_and_redis_ok() -> None:
    # given a running database and Redis
    client = Client()

    # when the health endpoint is asked
    response = client.get("/health/")

    # then both checks pass
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}
