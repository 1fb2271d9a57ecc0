import pytest


def test_liveness_answers_ok_without_touching_the_database(client):
    # no database access is allowed in this test: a query would raise instead of answering
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.django_db
def test_readiness_reports_each_check_when_all_pass(client):
    response = client.get("/api/health/ready")
    body = response.json()
    assert response.status_code == 200, body
    assert set(body["checks"]) == {"database", "cache", "broker", "beat"}
    assert all(check["ok"] for check in body["checks"].values())
