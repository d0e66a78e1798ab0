"""The endpoint's optional bearer token, without Ray: the middleware on the service's FastAPI
app (every route but /healthz and /readyz), the config and the environment variable."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from segsynth.config import load_config
from segsynth.serve.config import AUTH_TOKEN_ENV, ServeConfig
from segsynth.webapi import set_bearer_token


@pytest.fixture
def client():
    from segsynth.serve.service import api

    yield TestClient(api, raise_server_exceptions=False)  # the routes need a replica (self); the token check does not
    set_bearer_token(None)


def test_no_token_configured_means_open(client):
    set_bearer_token(None)
    assert client.get("/openapi.json").status_code == 200


def test_every_route_but_the_probes_needs_the_token(client):
    set_bearer_token("s3cret")
    for path in ("/openapi.json", "/docs", "/v1/model", "/v1/stats"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer" and r.json()["error"]["code"] == "unauthorized"
    r = client.post("/v1/remove", content=b"\x89PNG...")  # refused before the upload is read
    assert r.status_code == 401 and "no token" in r.json()["error"]["message"]
    r = client.get("/openapi.json", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "wrong token" in r.json()["error"]["message"]
    assert client.get("/openapi.json", headers={"Authorization": "Basic s3cret"}).status_code == 401
    assert client.get("/openapi.json", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    for probe in ("/healthz", "/readyz"):  # the probes stay open (a load balancer has no token)
        assert client.get(probe).status_code != 401


def test_the_token_comes_from_the_config_or_the_environment(monkeypatch):
    monkeypatch.delenv(AUTH_TOKEN_ENV, raising=False)
    cfg = load_config(ServeConfig, None, ["model=x"])
    assert cfg.with_token().auth_token is None
    monkeypatch.setenv(AUTH_TOKEN_ENV, "from-env")
    assert cfg.with_token().auth_token == "from-env"
    assert load_config(ServeConfig, None, ["model=x", "auth_token=from-config"]).with_token().auth_token == "from-config"
