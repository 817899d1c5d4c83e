"""The portal over views and a trail the real broker and router filled, shared by the browser
tests (test_auditor_browser.py, test_portal_browser.py) so scenario S1 goes through the router
once per session; and headless Chromium (Debian's ``chromium`` and ``chromedriver``).

Scenario S1 and two more MALS clients (tests/web/scenario.py) are published event by event, the
router decides and delivers, ``rebuild`` writes the police.iom and mals.mentor views, and
the portal serves them with uvicorn; its users are tests/web/support.py's.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml

from hub import bootstrap
from hub.adapters.view_consumer import rebuild
from hub.settings import Settings
from hub.topics import Topics
from hub.web import WebConfig, create_app
from hub.web.users import open_user_store
from tests.conftest import free_port
from tests.golden.policy.builder import EventBuilder
from tests.hubtest import LiveRouter, hub_settings, publish
from tests.web.scenario import EXTRA_EVENTS, EXTRA_PEOPLE, S1
from tests.web.support import add_users

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
AUDIENCES = ("police.iom", "mals.mentor")


@dataclass(frozen=True)
class Portal:
    base: str  # http://127.0.0.1:PORT
    settings: Settings
    config: WebConfig


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


@pytest.fixture(scope="session")
def portal(
    kafka_bootstrap: str, registry_url: str, codec: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Portal]:
    """The portal's base URL, over views the router filled; the hub settings; its config."""
    topics = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    home = tmp_path_factory.mktemp("portal") / "home"
    settings = hub_settings(kafka_bootstrap, registry_url, topics.prefix, home)
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
        yield Portal(f"http://127.0.0.1:{port}", settings, config)
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: the browser test needs Debian's Chromium and its "
            "driver (apt-get install -y chromium chromium-driver; .ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path_factory.mktemp("chromium-profile")
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=1280,2000",
                     f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
