"""The auditor's pages and the portal's defences in a real browser (Debian's headless Chromium
through Selenium), over the trail the real router wrote for scenario S1 (the ``portal`` of
tests/e2e/conftest.py) and the audit materialiser appending ``hub.audit`` to the hash chain.

An auditor signs in, searches the trail for Jordan by his police id, opens his disclosure
report, and finds on the trail the ``auditor_query`` entry its own search created. In the same
browser: a forged cross-site form is refused (CSRF), a police officer cannot open a MALS client,
and a name is locked out after five failed sign-ins.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from hub import bootstrap
from hub.adapters.audit_consumer import run_materialiser
from hub.adapters.audit_store import open_audit_store
from hub.audit.checkpoint import load_signer
from hub.web.users import open_user_store
from tests.web.scenario import SAM
from tests.web.support import PASSWORD

pytestmark = pytest.mark.kafka


@pytest.fixture
def materialiser(portal: Any) -> Iterator[None]:
    """``hub audit run`` in a thread for the length of the test."""
    settings = portal.settings
    stop = threading.Event()
    failed: list[BaseException] = []
    store = open_audit_store(settings.hub_database_url)

    def run() -> None:
        try:
            run_materialiser(
                bootstrap=settings.bootstrap_servers, topic=bootstrap.topics(settings).audit,
                store=store, signer=load_signer(bootstrap.keys_dir(settings)),
                should_stop=stop.is_set, checkpoint_every=50,
            )  # fmt: skip
        except BaseException as exc:  # noqa: BLE001 - reported below
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
        store.close()
    assert not failed, f"the materialiser failed: {failed[0]!r}"


def _by(kind: str) -> Any:
    from selenium.webdriver.common.by import By

    return getattr(By, kind)


def _wait(driver: Any, condition: Any, timeout: float = 15) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def _sign_in(driver: Any, base: str, name: str, password: str = PASSWORD) -> None:
    driver.delete_all_cookies()
    driver.get(f"{base}/login")
    driver.find_element(_by("ID"), "username").send_keys(name)
    driver.find_element(_by("ID"), "password").send_keys(password)
    driver.find_element(_by("ID"), "sign-in").click()


_CELLS = """return Array.from(document.querySelectorAll(arguments[0]),
                         row => Array.from(row.cells, cell => cell.textContent));"""


def _rows(driver: Any, section: str) -> list[list[str]]:
    """The cells of a report table, by its section's id (in one round trip, not one a cell)."""
    rows: list[list[str]] = driver.execute_script(_CELLS, f"#{section} table tbody tr")
    return rows


def _column(driver: Any, section: str, name: str) -> int:
    [heads] = driver.execute_script(_CELLS, f"#{section} table thead tr")
    return list(heads).index(name)


def test_an_auditor_searches_a_subject_opens_the_report_and_finds_their_own_query(
    portal: Any, browser: Any, materialiser: None
) -> None:
    base = portal.base

    # -- sign in: an auditor lands on the auditor's pages -------------------------------------
    _sign_in(browser, base, "dpo")
    _wait(browser, lambda d: d.current_url.endswith("/auditor"))
    assert "dpo · auditor · hub" in browser.find_element(_by("ID"), "who").text

    # -- search the trail for Jordan by his police id -----------------------------------------
    browser.find_element(_by("ID"), "go-search").click()
    _wait(browser, lambda d: "/auditor/search" in d.current_url)
    browser.find_element(_by("ID"), "f-subject").send_keys("police:MP-0042")
    browser.find_element(_by("ID"), "f-justification").send_keys("subject access request 17")
    browser.find_element(_by("ID"), "search-button").click()
    _wait(browser, lambda d: "subject=police" in d.current_url)
    kinds = {row[2] for row in _rows(browser, "entries")}
    assert {"published", "decided", "delivered"} <= kinds, kinds
    assert "CANARY" not in browser.page_source and "Kelly" not in browser.page_source

    # -- his disclosure report: who received what, under which clause, what was withheld ------
    browser.find_element(_by("ID"), "disclosure-link").click()
    _wait(browser, lambda d: "/auditor/disclosure" in d.current_url)
    audience = _column(browser, "recipients", "audience")
    withheld = _column(browser, "recipients", "fields withheld")
    recipients = {row[audience]: row for row in _rows(browser, "recipients")}
    assert {"police.iom", "mals.mentor"} <= set(recipients), recipients
    assert "family_name" in recipients["mals.mentor"][withheld]
    assert "family_name" not in recipients["police.iom"][withheld]
    clauses = {row[_column(browser, "entries", "clause_ids")] for row in _rows(browser, "entries")}
    assert "mals-10" in " ".join(clauses)
    assert "CANARY" not in browser.page_source and "14 Ashworth Road" not in browser.page_source
    browser.find_element(_by("ID"), "print-link").click()
    _wait(browser, lambda d: "format=print" in d.current_url)
    assert browser.find_element(_by("TAG_NAME"), "h1").text == "Disclosure report"

    # -- the trail holds the auditor's own search, once the materialiser appended it ----------
    def own_search_on_the_trail(driver: Any) -> bool:
        driver.get(f"{base}/auditor/search?subject=police:MP-0042&kind=auditor_query")
        actor, note = _column(driver, "entries", "actor"), _column(driver, "entries", "note")
        return any(
            row[actor] == "dpo" and "command=web audit search" in row[note]
            and "kind=auditor_query" not in row[note]  # the first search, not these re-checks
            for row in _rows(driver, "entries")
        )  # fmt: skip

    _wait(browser, own_search_on_the_trail, timeout=30)


def test_csrf_another_agencys_subject_and_lock_out_are_refused_in_the_browser(
    portal: Any, browser: Any
) -> None:
    base = portal.base

    # -- a form from another site, posting to the portal, is refused --------------------------
    _sign_in(browser, base, "iom.officer")
    _wait(browser, lambda d: "/search" in d.current_url)
    forged = (
        f'<form id="forged" method="post" action="{base}/logout">'
        '<input name="csrf_token" value="guessed"><button id="go">go</button></form>'
    )
    browser.get(f"data:text/html,{quote(forged)}")
    browser.find_element(_by("ID"), "go").click()
    _wait(browser, lambda d: d.current_url.startswith(base))
    assert "did not come from this site" in browser.find_element(_by("ID"), "error-message").text
    browser.get(f"{base}/search")
    assert "iom.officer" in browser.find_element(_by("ID"), "who").text  # still signed in

    # -- a police officer cannot open a MALS client -------------------------------------------
    browser.get(f"{base}/subject?scheme={SAM[0]}&id={SAM[1]}")
    assert "There is no such person in your view." in browser.page_source
    assert "CANARY-SAM-FAMILY" not in browser.page_source

    # -- five failed sign-ins lock the name, even against the right password ------------------
    open_user_store(portal.config.users_url).add("locked.browser", "police.iom", "practitioner",
                                                 PASSWORD)  # fmt: skip
    messages = []
    for password in [f"wrong guess {n}" for n in range(5)] + [PASSWORD]:
        _sign_in(browser, base, "locked.browser", password)
        # the answer to the post, not the sign-in page it was sent from
        error = _wait(browser, lambda d: d.find_elements(_by("ID"), "login-error"))
        messages.append(error[0].text)

    assert messages[:4] == ["Wrong user name or password."] * 4
    assert messages[4].startswith("Too many failed sign-ins")
    assert messages[5].startswith("Too many failed sign-ins")  # even the right password
    browser.get(f"{base}/search")
    assert "/login" in browser.current_url
