"""The web console in a real browser (headless Chromium), against the real platform.

Each test signs in from a clean tab. The page marks what it shows for the tests:
``body[data-state]`` (idle/busy), ``body[data-last-query]`` (the query of the picture
on screen) and ``canvas[data-boxes]`` (boxes drawn), which the tests compare with what
the API answers to the same request sent directly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from tests.conftest import SAMPLES, wait_for
from tests.e2e.console.conftest import MONTHLY_IMAGES, XSS_CLASS

IMAGE = SAMPLES / "shapes_02.jpg"
WAIT_S = 60


def _api(platform, path: str, **params) -> dict:
    answer = requests.post(
        f"{platform['url']}{path}",
        params=params,
        data=IMAGE.read_bytes(),
        headers={"Authorization": f"Bearer {platform['key']}", "Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _get(platform, path: str) -> dict:
    answer = requests.get(
        f"{platform['url']}{path}",
        headers={"Authorization": f"Bearer {platform['key']}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _open(browser, platform) -> None:
    browser.get(f"{platform['url']}/console")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{platform['url']}/console")
    _until(browser, lambda: _js(browser, "document.body.dataset.state") == "signed-out")


def _js(browser, expression: str):
    return browser.execute_script(f"return {expression}")


def _until(browser, condition, what: str = "the page") -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT_S, poll_frequency=0.1).until(lambda _: condition(), what)


def _sign_in(browser, platform, key: str | None = None) -> None:
    from selenium.webdriver.common.by import By

    _open(browser, platform)
    browser.find_element(By.ID, "api-key").send_keys(key or platform["key"])
    browser.find_element(By.ID, "sign-in-button").click()


def _signed_in(browser, platform) -> None:
    _sign_in(browser, platform)
    _until(browser, lambda: _js(browser, "document.body.dataset.state") == "idle", "sign-in")
    _until(browser, lambda: _js(browser, "document.getElementById('conf-value').textContent"))


def _shown(browser, **expected: str) -> bool:
    """The picture on screen answers a query with these parameters, and nothing is pending."""
    if _js(browser, "document.body.dataset.state") != "idle":
        return False
    sent = _js(browser, "document.body.dataset.lastQuery") or ""
    pairs = dict(p.split("=", 1) for p in sent.split("&") if "=" in p)
    return all(pairs.get(k) == v for k, v in expected.items())


def _upload(browser, path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "file").send_keys(str(path))
    _until(browser, lambda: _shown(browser) and _boxes(browser) is not None, "a detection")


def _boxes(browser) -> int | None:
    if _js(browser, "document.getElementById('canvas').width") == 0:
        return None
    return int(_js(browser, "document.getElementById('canvas').dataset.boxes"))


def _table(browser) -> list[list[str]]:
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, "#detections tbody tr")
    return [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in rows]


def _screenshot(browser, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    assert browser.save_screenshot(str(path))
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    # Not blank: real contrast and many distinct colours (a white page has one).
    assert float(image.std()) > 10
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50
    return path


def _no_alert(browser) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        browser.switch_to.alert  # noqa: B018  (raises if there is none)
    except NoAlertPresentException:
        return True
    return False


def test_a_wrong_key_shows_an_error_not_a_blank_page(browser, platform, tmp_path):
    from selenium.webdriver.common.by import By

    _sign_in(browser, platform, key="yk_not_a_real_key_000000000000")
    error = browser.find_element(By.ID, "sign-in-error")
    _until(browser, error.is_displayed, "the sign-in error")
    assert "not accepted" in error.text
    assert not browser.find_element(By.ID, "app").is_displayed()
    assert _js(browser, "sessionStorage.getItem('yoloserve.apiKey')") is None
    _screenshot(browser, tmp_path, "wrong-key")


def test_detections_are_drawn_one_box_each_and_listed(browser, platform, tmp_path):
    _signed_in(browser, platform)
    _upload(browser, IMAGE)
    conf, iou = (
        _js(browser, "document.getElementById('conf').value"),
        _js(browser, "document.getElementById('iou').value"),
    )
    direct = _api(platform, "/v1/detect", conf=conf, iou=iou)
    assert direct["detections"], "the sample has shapes the demo model finds"
    assert _boxes(browser) == len(direct["detections"])
    table = _table(browser)
    assert [row[1] for row in table] == [d["class_name"] for d in direct["detections"]]
    timing = _js(browser, "document.getElementById('timing').textContent")
    assert timing.startswith(f"{len(direct['detections'])} detections by shapes@1")
    # The key lives in this tab's session storage, never in the URL.
    assert platform["key"] not in browser.current_url
    assert _js(browser, "sessionStorage.getItem('yoloserve.apiKey')") == platform["key"]
    shot = _screenshot(browser, tmp_path, "detections")
    assert shot.stat().st_size > 10_000


def _target_conf(platform) -> tuple[float, int, int]:
    """A confidence that drops some but not all of the sample's detections."""
    confidences = sorted(d["confidence"] for d in _api(platform, "/v1/detect")["detections"])
    assert len(confidences) >= 2 and confidences[-1] - confidences[0] >= 0.02, confidences
    target = math.ceil((confidences[0] + confidences[-1]) / 2 * 100) / 100
    fewer = _api(platform, "/v1/detect", conf=f"{target:.2f}")["detections"]
    assert 0 < len(fewer) < len(confidences)
    return target, len(confidences), len(fewer)


def _move_conf_slider(browser, target: float) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    slider = browser.find_element(By.ID, "conf")
    steps = round((target - float(slider.get_attribute("value"))) / 0.01)
    assert steps > 0
    slider.send_keys(*([Keys.ARROW_RIGHT] * steps))  # what a keyboard user does
    _until(browser, lambda: abs(float(slider.get_attribute("value")) - target) < 1e-6)


def test_moving_the_confidence_slider_shows_fewer_boxes(browser, platform, tmp_path):
    target, before, after = _target_conf(platform)
    _signed_in(browser, platform)
    _upload(browser, IMAGE)
    assert _boxes(browser) == before
    _move_conf_slider(browser, target)
    _until(browser, lambda: _shown(browser, conf=str(target)), "the re-run at the new confidence")
    assert _boxes(browser) == after < before
    assert len(_table(browser)) == after
    assert all(float(row[2]) >= target - 1e-3 for row in _table(browser))
    _screenshot(browser, tmp_path, "fewer")


def test_saved_defaults_apply_to_a_plain_api_call(browser, platform):
    from selenium.webdriver.common.by import By

    target, before, after = _target_conf(platform)
    try:
        _signed_in(browser, platform)
        _move_conf_slider(browser, target)
        browser.find_element(By.ID, "save-defaults").click()
        status = browser.find_element(By.ID, "save-status")
        _until(browser, lambda: status.text.startswith("Saved"), "the save to finish")
        assert f"confidence {target:.2f}" in status.text
        # A plain API call, no parameters: the tenant's new default applies (this router
        # replica cached it on save; others see it within TENANT_DEFAULTS_TTL_S).
        wait_for(
            lambda: len(_api(platform, "/v1/detect")["detections"]) == after,
            30,
            "the saved default to apply",
        )
        assert _get(platform, "/v1/policy")["defaults"]["conf"] == pytest.approx(target)
        # A new visit starts from the saved default.
        _signed_in(browser, platform)
        assert float(_js(browser, "document.getElementById('conf').value")) == target
    finally:
        reset = requests.put(
            f"{platform['url']}/v1/policy",
            json={"conf": 0.25},
            headers={"Authorization": f"Bearer {platform['key']}"},
            timeout=30,
        )
        assert reset.status_code == 200, reset.text
    assert len(_api(platform, "/v1/detect")["detections"]) == before


def test_the_class_filter_re_runs_with_only_those_classes(browser, platform):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _signed_in(browser, platform)
    _upload(browser, IMAGE)
    direct = _api(platform, "/v1/detect", classes="square")["detections"]
    assert direct and {d["class_name"] for d in direct} == {"square"}
    field = browser.find_element(By.ID, "classes")
    field.send_keys("square", Keys.TAB)  # typing and leaving the field, as a user does
    _until(browser, lambda: _shown(browser, classes="square"), "the filtered re-run")
    assert [row[1] for row in _table(browser)] == [d["class_name"] for d in direct]
    assert _boxes(browser) == len(direct)


def test_a_class_name_that_is_html_is_shown_as_text_and_runs_nothing(browser, platform, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _signed_in(browser, platform)
    _upload(browser, IMAGE)
    Select(browser.find_element(By.ID, "model")).select_by_value("xss")
    _until(browser, lambda: _shown(browser, model="xss"), "the xss model's detections")
    direct = _api(platform, "/v1/detect", model="xss")
    names = [d["class_name"] for d in direct["detections"]]
    assert XSS_CLASS in names  # the sample has a circle, class 0
    assert [row[1] for row in _table(browser)] == names  # shown literally
    assert _boxes(browser) == len(names)
    assert _no_alert(browser)
    assert browser.find_elements(By.TAG_NAME, "img") == []  # nothing was parsed as HTML
    options = _js(
        browser, "[...document.querySelectorAll('#class-names option')].map(o => o.value)"
    )
    assert XSS_CLASS in options
    _screenshot(browser, tmp_path, "xss")


def test_usage_panel_shows_this_months_images_quota_and_the_last_day(browser, platform):
    from selenium.webdriver.common.by import By

    _api(platform, "/v1/detect")  # at least one image this hour
    _signed_in(browser, platform)

    def agrees() -> bool:
        browser.find_element(By.ID, "usage-refresh").click()
        report = _get(platform, "/v1/usage")
        hours = sum(h["images"] for h in report["hours"])
        shown = _js(browser, "document.getElementById('usage-images').textContent")
        remaining = _js(browser, "document.getElementById('usage-remaining').textContent")
        chart = _js(browser, "document.getElementById('usage-chart').dataset.images")
        return (
            shown == str(report["images_this_month"])
            and remaining == f"{report['remaining']} of {MONTHLY_IMAGES}"
            and chart == str(hours)
            and hours > 0
        )

    wait_for(agrees, 30, "the usage panel to match /v1/usage")


def test_the_console_is_served_with_a_strict_policy(platform):
    page = requests.get(f"{platform['url']}/console", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    script = requests.get(f"{platform['url']}/console/console.js", timeout=30)
    assert script.headers["content-type"].startswith("text/javascript")
    assert requests.post(f"{platform['url']}/console", timeout=30).status_code == 405


def _version_row(browser, version: int, key: str) -> str | None:
    """A data attribute of version ``version``'s row in the Models panel (None: no row)."""
    return _js(
        browser,
        f"(document.querySelector('#versions tr[data-version=\"{version}\"]') || "
        f"{{dataset: {{}}}}).dataset.{key}",
    )


def test_a_tenant_uploads_rolls_out_and_rolls_back_its_own_version(
    browser, platform, registry, tmp_path
):
    """The Models page: upload → validated → shadow rollout → promoted by the gate →
    rolled back, all from the browser; detections sent over the API feed the rollout."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from tests.conftest import DEMO_MODEL

    _signed_in(browser, platform)
    Select(browser.find_element(By.ID, "versions-model")).select_by_value("xss")
    _until(browser, lambda: _version_row(browser, 1, "status") == "ready", "the versions table")
    browser.find_element(By.ID, "upload-weights").send_keys(str(DEMO_MODEL / "model.safetensors"))
    browser.find_element(By.ID, "upload-arch").send_keys("yolov8n")
    browser.find_element(By.ID, "upload-classes").send_keys(f"{XSS_CLASS},square,triangle")
    imgsz = browser.find_element(By.ID, "upload-imgsz")
    imgsz.clear()
    imgsz.send_keys("320")
    browser.find_element(By.ID, "upload-button").click()
    wait_for(lambda: _version_row(browser, 2, "status") == "ready", 240, "validation")

    Select(browser.find_element(By.ID, "rollout-mode")).select_by_value("shadow")
    for field, value in (("rollout-percent", "100"), ("rollout-images", "3")):
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    browser.find_element(By.CSS_SELECTOR, 'button[data-action="rollout"][data-version="2"]').click()
    _until(browser, lambda: _version_row(browser, 2, "rollout") == "running", "the rollout")

    def promoted() -> bool:
        _api(platform, "/v1/detect", model="xss")  # the live traffic the gate compares
        return _version_row(browser, 2, "rollout") == "promoted"

    wait_for(promoted, 120, "the gate to promote version 2")
    assert _js(browser, "document.getElementById('versions').dataset.active") == "2"
    row = browser.find_element(By.CSS_SELECTOR, '#versions tr[data-version="2"]').text
    assert "agreement 1.000" in row and "promoted" in row
    Select(browser.find_element(By.ID, "model")).select_by_value("xss")  # the detect panel
    assert "2 (active)" in browser.find_element(By.ID, "version").text
    _screenshot(browser, tmp_path, "models")
    assert _no_alert(browser)

    browser.find_element(By.ID, "rollback").click()
    active = "document.getElementById('versions').dataset.active"
    _until(browser, lambda: _js(browser, active) == "1", "the rollback")
    assert "Rolled back: version 1 is active" in browser.find_element(By.ID, "models-status").text
    models = {m["name"]: m for m in _get(platform, "/v1/models")["models"]}
    assert models["xss"]["active_version"] == 1 and models["xss"]["versions"] == [1, 2]

    # the operator sees the upload, its rollout and the gate's decision
    def listed() -> dict | None:
        out = registry["tenantctl"]("model", "list", "acme", "--json").stdout
        [xss] = [m for m in json.loads(out) if m["name"] == "xss"]
        uploads = {u["version"]: u for u in xss["uploads"]}
        found = uploads.get(2)
        return found if found and found["rollout"]["state"] == "promoted" else None

    upload = wait_for(listed, 30, "tenantctl model list to show the promoted upload")
    assert upload["status"] == "ready" and upload["rollout"]["agreement"] == 1.0
