from django.test import Client


def test_the_root_shows_a_landing_page_with_links():
    # given a client
    client = Client()

    # when it opens the site's root
    response = client.get("/")

    # then it gets a page pointing at the docs, the admin and the health check
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    for link in ("/api/docs/", "/api/schema/", "/admin/", "/health/"):
        assert f'href="{link}"' in page


def test_the_root_only_answers_reads():
    # given a client
    client = Client()

    # when it posts to the root
    response = client.post("/")

    # then the method is refused
    assert response.status_code == 405
