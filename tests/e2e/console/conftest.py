"""The platform set up by an operator with tenantctl (a shared tenant with a monthly
quota, the demo model and a model whose class name is an XSS payload), and a real
headless Chromium (Debian's, driven by Selenium through Debian's chromedriver)."""

from __future__ import annotations

import os
import shutil

import pytest
import requests

from tests.conftest import DEMO_MODEL, SAMPLES, wait_for
from tests.e2e.tenantctl.conftest import ray_head, registry  # noqa: F401  (this package's own)

XSS_CLASS = "<img src=x onerror=alert(1)>"
MONTHLY_IMAGES = 500
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="package")
def platform(registry, tmp_path_factory):  # noqa: F811
    tenantctl = registry["tenantctl"]
    store = tmp_path_factory.mktemp("models")
    tenantctl("platform", "set", "--model-store-uri", f"file://{store}")
    tenantctl("tenant", "create", "acme", "--name", "Acme", "--tier", "shared")
    key = tenantctl("key", "issue", "acme").stdout.strip()
    tenantctl("quota", "set", "acme", "--monthly-images", str(MONTHLY_IMAGES))
    tenantctl(
        "model", "push", "acme", "xss", str(DEMO_MODEL / "model.safetensors"),
        "--arch", "yolov8n", "--class-names", f"{XSS_CLASS},square,triangle",
        "--imgsz", "320", "--activate",
    )  # fmt: skip
    tenantctl("apply", "--address", registry["dashboard"])
    url = registry["url"]
    image = (SAMPLES / "shapes_02.jpg").read_bytes()

    def serving() -> bool:
        answer = requests.post(
            f"{url}/v1/detect?model=xss",
            data=image,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"},
            timeout=30,
        )
        return answer.status_code == 200

    wait_for(serving, 300, "acme's models to answer over HTTP")
    return {"url": url, "key": key}


@pytest.fixture(scope="package")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("Debian's chromium and chromium-driver are missing: run `make tools`")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1800", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
