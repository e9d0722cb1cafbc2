"""configs/serve.tls.yaml: HTTPS with a freshly generated self-signed pair."""

from __future__ import annotations

import ssl
import sys

import pytest
import requests
import yaml

from serve_app.auth.keys import generate_api_key, hash_api_key
from tests.conftest import ROOT, SAMPLES, free_port
from tests.e2e.conftest import serve_run

sys.path.insert(0, str(ROOT / "scripts"))
from make_dev_cert import write_self_signed

KEY = generate_api_key()


@pytest.fixture(scope="module")
def https(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = write_self_signed(tmp / "certs")
    config = yaml.safe_load((ROOT / "configs" / "serve.tls.yaml").read_text())
    port = free_port()
    config["http_options"].update(port=port, ssl_certfile=str(cert), ssl_keyfile=str(key))
    # The config ships without keys (it faces a network): the operator adds one.
    [router] = [d for d in config["applications"][0]["deployments"] if d["name"] == "router"]
    router["user_config"]["tenants"][0]["api_keys"] = [
        {"id": "key_tls", "sha256": hash_api_key(KEY)}
    ]
    path = tmp / "serve.tls.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    url = f"https://127.0.0.1:{port}"
    with serve_run(path, url, tmp / "serve.log", verify=str(cert)):
        yield {"url": url, "cert": str(cert), "port": port}


def test_detect_over_https_with_the_certificate_verified(https):
    resp = requests.post(
        f"{https['url']}/v1/detect",
        data=(SAMPLES / "shapes_02.jpg").read_bytes(),
        headers={"Authorization": f"Bearer {KEY}"},
        verify=https["cert"],
        timeout=120,
    )
    assert resp.status_code == 200 and resp.json()["model"] == "shapes@1"
    assert len(resp.json()["detections"]) >= 4


def test_untrusted_clients_and_plain_http_get_nothing(https):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{https['url']}/healthz", timeout=30)  # system CAs do not know our cert
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{https['port']}/healthz", timeout=30)


def test_the_server_speaks_tls_1_2_or_newer(https):
    import socket

    context = ssl.create_default_context(cafile=https["cert"])
    with (
        socket.create_connection(("127.0.0.1", https["port"]), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in {"TLSv1.2", "TLSv1.3"}
