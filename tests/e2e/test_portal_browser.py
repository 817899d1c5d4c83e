"""The portal in a real browser (Debian's headless Chromium, driven by Selenium through Debian's
chromedriver), on views filled through the real broker (the ``portal`` of tests/e2e/conftest.py:
scenario S1 and two more MALS clients through the router).

A MALS volunteer mentor and a police IOM officer each sign in and open Jordan, the same person
under their own ids; the test checks what each page shows and what it hides, and that each
opening put an access entry on ``hub.audit``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hub import bootstrap
from hub.audit.entry import AuditEntry
from hub.web.audit import subject_ref
from tests.hubtest import read_all
from tests.web.scenario import JORDAN, SAM
from tests.web.support import PASSWORD

pytestmark = pytest.mark.kafka


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
    portal: Any, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, settings = portal.base, portal.settings

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
        if e.kind == "access"
        and e.details.get("page") == "subject"
        and e.actor in ("mentor17", "iom.officer")  # the portal is shared with other tests
    ]
    assert opened == [
        ("mentor17", "mals.mentor", subject_ref(*JORDAN["mals.mentor"])),
        ("iom.officer", "police.iom", subject_ref(*JORDAN["police.iom"])),
    ]
