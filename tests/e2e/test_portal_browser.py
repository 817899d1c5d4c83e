"""The portal in a real browser (Debian's headless Chromium, driven by Selenium through Debian's
chromedriver), on views filled through the real broker.

Scenario S1 and two more MALS clients (tests/web/scenario.py) are published event by event, the
router decides and delivers, ``rebuild`` writes the police.iom and mals.mentor views, and the
portal serves them with uvicorn. A MALS volunteer mentor and a police IOM officer each sign in
and open Jordan, the same person under their own ids; the test checks what each page shows and
what it hides, and that each opening put an access entry on ``hub.audit``.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml

from hub import bootstrap
from hub.adapters.view_consumer import rebuild
from hub.audit.entry import AuditEntry
from hub.web import WebConfig, create_app
from hub.web.audit import subject_ref
from hub.web.users import open_user_store
from tests.conftest import free_port
from tests.golden.policy.builder import EventBuilder
from tests.hubtest import LiveRouter, hub_settings, publish, read_all
from tests.web.scenario import EXTRA_EVENTS, EXTRA_PEOPLE, JORDAN, S1, SAM
from tests.web.support import PASSWORD, add_users

pytestmark = pytest.mark.kafka
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
AUDIENCES = ("police.iom", "mals.mentor")


def _events(catalogue: Any) -> list[dict[str, Any]]:
    """S1's events in the order the scenario applies them, then the extra clients' events."""
    doc = yaml.safe_load(S1.read_text(encoding="utf-8"))
    doc["people"].update(EXTRA_PEOPLE)
    doc["events"].update(EXTRA_EVENTS)
    agreements = bootstrap.agreements(catalogue)
    jurisdictions = {a.id: a.jurisdiction for a in agreements.agencies()}
    builder = EventBuilder(catalogue, jurisdictions, doc["people"], namespace="portal-browser")
    order: list[str] = []
    for step in doc["steps"]:
        for name in [*step.get("apply", []), *([step["check"]] if "check" in step else [])]:
            if name not in order:
                order.append(name)
    return [builder.build(name, doc["events"][name]) for name in [*order, *EXTRA_EVENTS]]


@pytest.fixture
def portal(kafka_bootstrap: str, registry_url: str, topics: Any, codec: Any, tmp_path: Path
           ) -> Iterator[tuple[str, Any]]:  # fmt: skip
    """The portal's base URL, over views the router filled; and the hub settings."""
    settings = hub_settings(kafka_bootstrap, registry_url, topics.prefix, tmp_path / "home")
    bootstrap.init(settings)
    with LiveRouter(settings) as live:
        for count, event in enumerate(_events(codec.catalogue), 1):
            # one at a time, as they happen: a mentor sees a release only once assigned
            publish(settings, codec, [event])
            live.wait(count)
    config = WebConfig.from_settings(settings)
    for audience in AUDIENCES:
        rebuild(kafka_bootstrap, topics, audience, config.view_url(audience), codec)
    add_users(open_user_store(config.users_url))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the portal did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", settings
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: the browser test needs Debian's Chromium and its "
            "driver (apt-get install -y chromium chromium-driver; .ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=1280,2000",
                     f"--user-data-dir={tmp_path / 'chromium-profile'}"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def _sign_in(driver: Any, base: str, name: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.delete_all_cookies()
    driver.get(f"{base}/login")
    driver.find_element(By.ID, "username").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "sign-in").click()
    WebDriverWait(driver, 10).until(lambda d: "/search" in d.current_url)
    assert name in driver.find_element(By.ID, "who").text


def _open_first_result(driver: Any) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.CSS_SELECTOR, "#results a.subject-link").click()
    WebDriverWait(driver, 10).until(lambda d: "/subject" in d.current_url)
    text: str = driver.find_element(By.TAG_NAME, "body").text
    return text


def _field(driver: Any, event_type: str, field: str) -> str:
    from selenium.webdriver.common.by import By

    selector = f'article[data-event-type="{event_type}"] dd[data-field="{field}"]'
    text: str = driver.find_element(By.CSS_SELECTOR, selector).text
    return text


def test_a_mentor_and_an_iom_officer_see_their_own_view_of_the_same_person(
    portal: tuple[str, Any], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, settings = portal

    # -- the volunteer mentor: their mentee's first name, meeting arrangements, safety flags ---
    _sign_in(browser, base, "mentor17")
    mentees = browser.find_element(By.ID, "results").text
    assert "Jordan" in mentees and "MALS-0107" in mentees
    assert "MALS-0200" not in mentees and "MALS-0300" not in mentees  # other mentors' mentees
    page = _open_first_result(browser)
    browser.save_screenshot(str(tmp_path / "mentor.png"))
    assert browser.find_element(By.ID, "subject-name").text == "Jordan"
    for shown in ("HMP Liverpool gate, Hornby Road", "Meet at the gate at 09:30",
                  "Curfew 19:00 to 07:00", "Non-association with named individuals"):  # fmt: skip
        assert shown in page, shown
    for hidden in ("CANARY", "Kelly", "14 Ashworth Road", "L32 7XY", "Carol Hughes", "917",
                   "REF-CRC-300", "knowsley_iom", "Referrals"):  # fmt: skip
        assert hidden not in page, hidden
    assert _field(browser, "person.registered", "family_name") == "withheld (clause mals-10)"
    assert _field(browser, "custody.released", "destination_address") == (
        "withheld (clause mals-12)"
    )
    browser.get(f"{base}/subject?scheme={SAM[0]}&id={SAM[1]}")  # not theirs
    assert "There is no such person in your view." in browser.page_source
    browser.get(f"{base}/subject?scheme={JORDAN['police.iom'][0]}&id={JORDAN['police.iom'][1]}")
    assert "There is no such person in your view." in browser.page_source
    browser.get(f"{base}/search")
    browser.find_element(By.ID, "sign-out").click()
    WebDriverWait(browser, 10).until(lambda d: "/login" in d.current_url)

    # -- the police IOM officer: release address, every licence condition, priority score ----
    _sign_in(browser, base, "iom.officer")
    browser.find_element(By.ID, "q").send_keys("MP-0042")
    browser.find_element(By.ID, "search-button").click()
    WebDriverWait(browser, 10).until(lambda d: "MP-0042" in d.current_url)
    page = _open_first_result(browser)
    browser.save_screenshot(str(tmp_path / "iom.png"))
    assert "MP-0042" in browser.find_element(By.ID, "subject-id").text
    for shown in ("14 Ashworth Road", "CANARY-ASSOC-Dean Mercer", "Carol Hughes", "917",
                  "knowsley_iom", "CANARY-ARREST-CIRCUMSTANCES"):  # fmt: skip
        assert shown in page, shown
    for hidden in ("MENTOR-17", "Meet at the gate", "HMP Liverpool gate", "Jordan"):
        assert hidden not in page, hidden

    # -- each opening is on the audit trail, with no content ----------------------------------
    trail = read_all(settings.bootstrap_servers, bootstrap.topics(settings).audit)
    opened = [
        (e.actor, e.audience, e.subject_ref)
        for e in (AuditEntry.from_json_bytes(m.value()) for m in trail)
        if e.kind == "access" and e.details.get("page") == "subject"
    ]
    assert opened == [
        ("mentor17", "mals.mentor", subject_ref(*JORDAN["mals.mentor"])),
        ("iom.officer", "police.iom", subject_ref(*JORDAN["police.iom"])),
    ]
