"""The profile inspector (``GET /ui/users/{user_id}``) against the real Serve app, and in headless Chromium.

The browser tests drive Debian's ``chromium`` with ``chromium-driver`` through Selenium (``make chromium``
installs both when missing; without them these tests fail, they do not skip). They load the page for a seeded
user, enter the API key once, count the bars of both charts, run "try it" for /v1/score and /v1/rewrite, and
save a screenshot (``P13N_INSPECTOR_SCREENSHOT=docs/inspector.png`` writes the README's).
A user whose preference, memory and id are HTML is shown as text: no element of theirs is created.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from p13n.devstack import wait_until
from serving.inspector import SECURITY_HEADERS
from stream.processing import BatchProcessor, records_from_lines
from tests.conftest import REPO

pytestmark = pytest.mark.slow

HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_MEMORY = "</li><script>alert(2)</script><b>bold?</b>"
HOSTILE_USER = "evil<svg onload=alert(3)>/é"
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromedriver")


def a_user(seeded, tenant: str = "shop") -> str:
    return sorted(seeded.data[tenant].interests)[0]


def get(api, path: str) -> tuple[int, dict, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(api.url + path, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture(scope="module")
def hostile_user(seeded, consumer_encoder) -> str:
    """A shop user whose preference and memory are HTML, with an id that is HTML too."""
    now = int(time.time() * 1000)
    item = seeded.data["shop"].items[0]["item_id"]
    events = [
        {"event_id": "h-1", "type": "preference", "text": HOSTILE, "timestamp": now - 60_000},
        {"event_id": "h-2", "type": "message", "text": HOSTILE_MEMORY, "timestamp": now - 30_000},
        {"event_id": "h-3", "type": "click", "item_id": item, "timestamp": now - 10_000},
    ]
    events = [{**e, "tenant": "shop", "user_id": HOSTILE_USER} for e in events]
    processor = BatchProcessor(seeded.store, seeded.config, consumer_encoder.encode, clock_ms=lambda: now)
    processor.process_events(records_from_lines([json.dumps(e).encode() for e in events], "events"))
    return HOSTILE_USER


@pytest.fixture(scope="module")
def shown_user(seeded, consumer_encoder) -> str:
    """A shop user for the page and its screenshot: a seeded user's events under a new id (the seeded users
    stay as the other modules expect them), a stated preference and a short conversation (memories)."""
    now = int(time.time() * 1000)
    source = a_user(seeded)
    user = "shopper-ana"
    events = [{**e, "user_id": user, "event_id": f"ana-{e['event_id']}"}
              for e in seeded.data["shop"].events if e["user_id"] == source]  # fmt: skip
    said = ["I'm planning a vegetable bed on my balcony this spring.", "My sister just had a baby, so gifts for "
            "newborns are on my mind.", "Please keep suggestions under 50 euros."]  # fmt: skip
    events += [{"event_id": f"ana-m{n}", "user_id": user, "tenant": "shop", "type": "message", "text": text,
                "timestamp": now - (3 - n) * 3_600_000, "session_id": "s1"} for n, text in enumerate(said)]  # fmt: skip
    processor = BatchProcessor(seeded.store, seeded.config, consumer_encoder.encode, clock_ms=lambda: now)
    processor.process_events(records_from_lines([json.dumps(e).encode() for e in events], "events"))
    return user


# --- HTTP ----------------------------------------------------------------------------------------
def test_the_page_is_public_static_and_locked_down(api, seeded):
    """The shell needs no key (it holds no user data); it and its assets carry the CSP; nothing inline."""
    status, headers, body = get(api, f"/ui/users/{quote(a_user(seeded), safe='')}")
    assert status == 200 and headers["content-type"].startswith("text/html")
    headers = {k.lower(): v for k, v in headers.items()}
    for name, value in SECURITY_HEADERS.items():
        assert headers[name] == value
    page = body.decode()
    assert a_user(seeded) not in page and "<script>" not in page and "style=" not in page
    for asset, kind in (("/ui/inspector.js", "text/javascript"), ("/ui/inspector.css", "text/css")):
        status, headers, body = get(api, asset)
        assert status == 200 and headers["content-type"].startswith(kind) and body
    script = get(api, "/ui/inspector.js")[2].decode()
    script = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("//"))
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script


def test_bad_paths_and_methods_answer_in_the_error_shape(api):
    for path, status, code in (("/ui/users/a/b", 422, "invalid_field"), ("/ui/users/%FF", 400, "invalid_utf8"),
                               ("/ui/nothing.js", 404, "not_found")):  # fmt: skip
        got, _, body = get(api, path)
        assert (got, json.loads(body)["error"]["code"]) == (status, code), path
    status, body, _ = api.call("POST", "/ui/users/x", {})
    assert status == 405 and body["error"]["code"] == "method_not_allowed"


def test_the_profile_has_attribute_horizons_and_its_time(api, seeded):
    status, profile, _ = api.call("GET", f"/v1/users/{quote(a_user(seeded), safe='')}")
    assert status == 200
    assert abs(profile["as_of_ms"] - time.time() * 1000) < 60_000
    view = profile["attribute_horizons"]
    assert (view["short"]["horizon"], view["long"]["horizon"]) == ("session", "long")
    assert 0 < len(view["top"]) <= 12
    for row in view["top"]:  # the long-horizon strength is the state's attribute EMA, read at the same time
        assert row["long"] == profile["attributes"].get(row["attribute"], 0.0), row
    assert any(row["short"] > 0 for row in view["top"])  # the seeded users were active in the last hour
    strongest = max(profile["attributes"], key=lambda k: abs(profile["attributes"][k]))
    assert view["top"][0]["attribute"] == strongest


# --- the browser ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [path for path in CHROMIUM if not shutil.which(path)]
    if missing:
        pytest.fail(f"{missing} missing: `make chromium` installs Debian's chromium and chromium-driver", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM[0]
    for flag in ("--headless", "--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-dev-shm-usage", "--window-size=1280,2000", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMIUM[1]))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def open_page(browser, api, user_id: str, key: str | None = "key-shop") -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{api.url}/ui/users/{quote(user_id, safe='')}")
    if key is not None and browser.execute_script("return sessionStorage.getItem('p13n-api-key')") is None:
        wait_until(lambda: browser.find_element(By.ID, "key-form").is_displayed(), timeout=10, what="the key form")
        browser.find_element(By.ID, "key").send_keys(key)
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait_until(lambda: browser.find_element(By.ID, "profile").is_displayed(), timeout=20, what="the profile",
               interval=0.1)  # fmt: skip


def bar_sizes(browser, selector: str) -> list[float]:
    script = "return [...document.querySelectorAll(arguments[0])].map(r => r.getBBox().width * r.getBBox().height)"
    return browser.execute_script(script, selector)


def test_the_page_shows_a_user_and_try_it_answers(api, shown_user, browser, tmp_path):
    from selenium.webdriver.common.by import By

    user = shown_user
    _, profile, _ = api.call("GET", f"/v1/users/{quote(user, safe='')}")
    browser.get(f"{api.url}/ui/users/x")
    browser.execute_script("sessionStorage.clear()")
    open_page(browser, api, user)
    assert user in browser.find_element(By.ID, "who").text
    assert "key-shop" not in browser.current_url
    attributes = len(profile["attribute_horizons"]["top"])
    assert len(bar_sizes(browser, "#attributes rect.bar")) == 2 * attributes
    assert sum(1 for s in bar_sizes(browser, "#attributes rect.bar.long") if s > 0) >= 1
    clock = bar_sizes(browser, "#clock rect.bar")
    assert len(clock) == 24 and sum(1 for s in clock if s > 0) == sum(1 for x in profile["interest_clock_utc"] if x > 0)
    history_rows = browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")
    assert len(history_rows) == len(profile["history"])
    newest = max(profile["history"], key=lambda h: h["ts_ms"])
    assert newest["item_id"] in history_rows[0].text and newest["type"] in history_rows[0].text
    prefs = browser.find_elements(By.CSS_SELECTOR, "#preferences li .text")
    assert [p.text for p in prefs] == [p["text"] for p in reversed(profile["preferences"])]
    memories = browser.find_elements(By.CSS_SELECTOR, "#memories li .text")
    assert [m.text for m in memories] == [m["text"] for m in profile["memories"]] and len(memories) == 3

    # a generous budget: the first requests of a fresh Serve on a loaded 2-core machine can take long
    browser.find_element(By.ID, "budget").send_keys("5000")
    browser.find_element(By.ID, "try-run").click()  # score: the history's items are prefilled
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#try-items tbody tr"), timeout=20, what="scores")
    scored = browser.find_elements(By.CSS_SELECTOR, "#try-items tbody tr")
    assert len(scored) == min(20, len({h["item_id"] for h in profile["history"]}))  # the prefilled candidates
    stages = [r.text.split()[0] for r in browser.find_elements(By.CSS_SELECTOR, "#try-timings tbody tr")]
    assert "total" in stages and "redis" in stages
    assert browser.find_element(By.ID, "try-degraded").text == "none (the full path ran)"

    browser.find_element(By.CSS_SELECTOR, "input[name=endpoint][value=rewrite]").click()
    browser.find_element(By.ID, "try-run").click()
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#try-answer .message"), timeout=20, what="a rewrite")
    raw = json.loads(browser.find_element(By.ID, "try-raw").get_attribute("textContent"))
    assert raw["messages"][-1]["content"] == "What should I pick for this weekend?" and "total" in raw["timings_ms"]
    assert raw["degraded"] == []
    browser.find_element(By.CSS_SELECTOR, "input[name=endpoint][value=score]").click()
    browser.find_element(By.ID, "try-run").click()
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#try-items tbody tr"), timeout=20, what="scores again")

    shot = Path(os.environ.get("P13N_INSPECTOR_SCREENSHOT") or tmp_path / "inspector.png")
    if not shot.is_absolute():
        shot = REPO / shot
    browser.execute_script("window.scrollTo(0, 0)")
    page = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    shot.write_bytes(base64.b64decode(page["data"]))  # the whole page, not only the window
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_hostile_text_is_shown_as_text(api, browser, hostile_user):
    from selenium.webdriver.common.by import By

    open_page(browser, api, hostile_user)
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#memories li .text"), timeout=10, what="memories")
    assert [p.text for p in browser.find_elements(By.CSS_SELECTOR, "#preferences li .text")] == [HOSTILE]
    assert HOSTILE_MEMORY in [m.text for m in browser.find_elements(By.CSS_SELECTOR, "#memories li .text")]
    assert HOSTILE_USER in browser.find_element(By.ID, "who").text
    assert browser.find_elements(By.CSS_SELECTOR, "img, script:not([src]), b, main svg:not(.chart)") == []
    assert browser.execute_script("return document.querySelectorAll('script').length") == 1


def test_an_unknown_key_is_forgotten_and_another_tenants_user_is_not_found(api, browser, hostile_user):
    from selenium.webdriver.common.by import By

    page = f"{api.url}/ui/users/{quote(hostile_user, safe='')}"
    browser.get(f"{api.url}/ui/users/x")
    browser.execute_script("sessionStorage.setItem('p13n-api-key', 'nope')")
    browser.get(page)
    wait_until(lambda: "HTTP 401" in browser.find_element(By.ID, "status").text, timeout=10, what="the 401")
    assert browser.find_element(By.ID, "key-form").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('p13n-api-key')") is None
    browser.find_element(By.ID, "key").send_keys("key-news")  # a key of tenant news: the shop user is not there
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait_until(lambda: "HTTP 404" in browser.find_element(By.ID, "status").text, timeout=10, what="the 404")
    assert not browser.find_element(By.ID, "profile").is_displayed()
