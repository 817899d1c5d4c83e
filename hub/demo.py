"""``hub demo``: the whole hub on fictional data, end to end, through the real broker.

What it does (``make demo`` runs it):

1. starts the local broker (or uses ``HUB_KAFKA_BOOTSTRAP``), serves the schema registry in this
   process on a free port, and runs ``hub init`` in a fresh run directory
   ``HUB_HOME/demo/<stamp>`` with a fresh topic prefix ``demo-<stamp>.``, so runs never mix;
2. generates fictional people and their histories with a fixed seed (Knowsley: police IOM cohort,
   HMP Liverpool releases, CRC/NPS supervision, MALS referrals, consent and mentoring, outcomes,
   arrests; The Hague: Safety House cases, plans, the Mayor's orders; Turin: ERI referrals, LCP
   attendance, work experience and jobs), each fact checked as a hub event with its agency's
   :class:`Publisher` and woven through with the storylines of scenarios S1 (release into the IOM
   cohort), S3 (MALS referral), S4 (mentoring recorded once), S5 (breach and recall), S6 (moving
   out of Merseyside), S7 (consent withdrawn), S8 (a corrected release date), S9 (Safety House),
   S12 (ERI) and S19 (a restricted-programme record, rejected to the DLQ);
3. hands them to the hub in six waves (the IOM cohort; statutory records; the partners' answers;
   what happened; changes; what happened after) as the partners would: each partner's export in
   its own format through its connector, MALS staff's entries through MALS' database and the
   MALS source connector, the rest through the HTTP ingest API (:mod:`hub.demo_partners`); the
   router runs in a thread and commits each wave before the next, so every decision sees the
   state it depends on and every run decides the same; the MALS sink then writes the referrals
   delivered to MALS into MALS' database;
4. appends ``hub.audit`` to the hash chain, fills six audience views (SQLite under the run
   directory) until each has read its topic to the end, and verifies the audit trail;
5. prints each connector's summary, what each audience got, what was withheld from it and by
   which clause, what was retracted, what went to the DLQ and why, and where everything is;
6. (the command, unless ``--no-serve``) serves the portal with a demo sign-in per audience until
   Ctrl-C.

Every name, number and address is invented. :func:`run_demo` is the headless core (the end-to-end
test calls it against the session broker); :func:`main` is the command.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from hub import bootstrap
from hub.demo_partners import FeedReport, MalsDesk, PartnerFeeds, ingest_server
from hub.publisher import Publisher, subject
from hub.settings import Settings

log = structlog.get_logger(__name__)

SEED = 20150302
DEFAULT_SIZE = 240  # people in Knowsley; The Hague and Turin get a quarter as many each
VIEW_AUDIENCES = ("police.iom", "mals", "mals.mentor", "kmbc", "safety_house", "nl_police",
                  "hague_aftercare", "eri")  # fmt: skip
UTC = dt.UTC
NL_AUDIENCES = ("safety_house", "nl_police", "hague_aftercare", "hague_municipality", "nl_housing",
                "nl_probation", "nl_prosecutor", "nl_health")  # fmt: skip
IT_AUDIENCES = ("eri", "it_social_services", "uepe", "collegno")

SYSTEMS = {  # agency -> (source system, jurisdiction)
    "police": ("corvus", "UK-ENG"),
    "hmp_liverpool": ("nomis", "UK-ENG"),
    "probation_crc": ("ndelius", "UK-ENG"),
    "probation_nps": ("ndelius", "UK-ENG"),
    "mals": ("mals-db", "UK-ENG"),
    "safety_house": ("gcos", "NL"),
    "hague_municipality": ("hague-ov", "NL"),
    "hague_aftercare": ("veiligheidshuis", "NL"),
    "nl_probation": ("reclassering-iris", "NL"),
    "eri": ("eri-crm", "IT"),
    "it_social_services": ("cisap-cartella", "IT"),
    "uepe": ("uepe-sipe", "IT"),
}

# -- invented people and places -------------------------------------------------------------------

UK_GIVEN = (
    "Jordan", "Aaron", "Kai", "Liam", "Owen", "Connor", "Callum", "Jamie", "Lewis", "Ryan",
    "Dean", "Kyle", "Nathan", "Daniel", "Michael", "Shaun", "Craig", "Lee", "Scott", "Anthony",
    "Paul", "Mark", "Gary", "Stephen", "Ben", "Tyler", "Reece", "Bradley", "Jack", "Josh",
    "Chloe", "Leanne", "Kerry", "Stacey", "Jade", "Gemma",
)  # fmt: skip
UK_FAMILY = (
    "Kelly", "Whitfield", "Doyle", "Murphy", "Gallagher", "Brennan", "McCann", "Rimmer", "Lunt",
    "Birchall", "Tyrer", "Ashcroft", "Marsden", "Heyes", "Culshaw", "Critchley", "Pennington",
    "Halsall", "Moorcroft", "Dunne", "Quayle", "Gorman", "Fairclough", "Hesketh", "Rostron",
    "Swarbrick", "Tunstall", "Gaskell", "Molyneux", "Rigby",
)  # fmt: skip
STORY_NAMES = (("Jordan", "Kelly"), ("Ben", "Whitfield"), ("Kai", "Brennan"), ("Owen", "Marsden"))
ASSOCIATES = ("Dean Mercer", "Kyle Barton", "Wayne Hopley", "Lee Starkie", "Darren Oakes",
              "Ricky Pemberton", "Carl Yendall")  # fmt: skip
UK_TOWNS = (  # (town, outward code, area)
    ("Kirkby", "L32", "Knowsley"), ("Kirkby", "L33", "Knowsley"), ("Huyton", "L36", "Knowsley"),
    ("Prescot", "L34", "Knowsley"), ("Whiston", "L35", "Knowsley"), ("Halewood", "L26", "Knowsley"),
    ("Stockbridge Village", "L28", "Knowsley"), ("Liverpool", "L6", "Liverpool"),
)  # fmt: skip
UK_STREETS = (
    "Ashworth Road", "Moorfield Close", "Brookhey Drive", "Tithebarn Lane", "Larch Grove",
    "Copperfield Way", "Hallwood Crescent", "Greenway Road", "Sandpiper Walk", "Oakhill Rise",
)  # fmt: skip
OFFENDER_MANAGERS = {
    "probation_crc": ("Carol Hughes", "Pat Doyle", "Sam Okafor", "Gill Tarleton", "Ravi Mistry"),
    "probation_nps": ("Helen Ashby", "Tom Greenall", "Nadia Rahman", "Chris Lowe"),
}
OFFENCES = ("theft_from_person", "burglary", "theft_from_shop", "vehicle_theft", "robbery",
            "drug_supply_intent", "common_assault", "criminal_damage", "receiving_stolen_goods")
CONTACT_NOTES = (
    "Talked about getting back into boxing at the community gym.",
    "Worried about money until the first benefit payment comes through.",
    "Went with him to the housing options appointment; waiting list explained.",
    "Low mood this week; agreed to meet again on Friday.",
    "Celebrated two months without a drink; wants to look at a CSCS card.",
    "Helped fill in the bank account application.",
)  # fmt: skip
NL_GIVEN = ("Henk", "Yusuf", "Mohamed", "Kevin", "Dennis", "Rachid", "Jeroen", "Sanne", "Ricardo",
            "Mehmet", "Bram", "Sven", "Anouk", "Youssef", "Jordy", "Gerrit", "Priscilla")
NL_FAMILY = ("de Vries", "Jansen", "Bakker", "Visser", "Smit", "Meijer", "el Amrani", "Yilmaz",
             "Kok", "Mulder", "de Groot", "Bos", "Vos", "Hendriks", "van Dijk", "Tahiri", "Sedney")
NL_DISTRICTS = ("Schilderswijk", "Transvaal", "Moerwijk", "Laak", "Escamp", "Scheveningen")
IT_GIVEN = ("Marco", "Luca", "Andrea", "Giuseppe", "Francesco", "Alessandro", "Davide", "Matteo",
            "Ahmed", "Ionut", "Stefano", "Simone", "Paolo", "Fabio", "Giulia", "Elena")
IT_FAMILY = ("Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci",
             "Marino", "Greco", "Bruno", "Gallo", "Conti", "Costa", "Giordano", "Popescu")
IT_EMPLOYERS = ("Cooperativa Il Ponte", "Officine Dora", "Panificio San Carlo",
                "Logistica Collegno", "Ristorante Borgo Dora", "Verde Grugliasco (cooperative)")


def _day(value: str) -> dt.date:
    return dt.date.fromisoformat(value)


def _at(day: dt.date, hour: int = 9, minute: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def _address(rng: random.Random, kind: str = "home") -> dict[str, Any]:
    town, outward, area = rng.choice(UK_TOWNS)
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    inward = f"{rng.randrange(1, 10)}{rng.choice(letters)}{rng.choice(letters)}"
    return {"line1": f"{rng.randrange(1, 120)} {rng.choice(UK_STREETS)}", "line2": None,
            "town": town, "postcode": f"{outward} {inward}", "area": area, "country": "GB",
            "kind": kind}  # fmt: skip


def _om(rng: random.Random, body: str) -> dict[str, Any]:
    name = rng.choice(OFFENDER_MANAGERS[body])
    first, last = name.split(" ", 1)
    return {"organisation": body, "role": "offender manager", "name": name,
            "phone": f"0151 555 0{rng.randrange(100, 999)}",
            "email": f"{first[0].lower()}.{last.lower()}@{body.split('_')[1]}.example"}  # fmt: skip


def _bsn(rng: random.Random) -> str:
    """Nine digits passing the Dutch 11-test (invented, like every number here)."""
    while True:
        digits = [rng.randrange(1, 10)] + [rng.randrange(10) for _ in range(7)]
        check = sum(d * w for d, w in zip(digits, range(9, 1, -1), strict=True)) % 11
        if check < 10:
            return "".join(map(str, digits + [check]))


def _codice_fiscale(given: str, family: str, born: dt.date, female: bool) -> str:
    """A well-formed codice fiscale (Turin's town code L219, a valid check character)."""
    from connectors.eri import check_character

    def consonants(text: str) -> str:
        letters = [c for c in text.upper() if c.isalpha()]
        picked = [c for c in letters if c not in "AEIOU"] + [c for c in letters if c in "AEIOU"]
        return ("".join(picked) + "XXX")[:3]

    month = "ABCDEHLMPRST"[born.month - 1]
    day = born.day + (40 if female else 0)
    first15 = f"{consonants(family)}{consonants(given)}{born.year % 100:02d}{month}{day:02d}L219"
    return first15 + check_character(first15)


# -- the generated data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One event to publish: the agency publishing it and the record built by its Publisher."""

    agency: str
    record: dict[str, Any]
    source_key: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # what only the partner's file holds

    @property
    def event_id(self) -> str:
        return str(self.record["envelope"]["event_id"])

    @property
    def event_type(self) -> str:
        return str(self.record["envelope"]["event_type"])


# The waves, in order: each is committed by the router before the next is published, so what a
# decision depends on (cohort, supervision, referral, mentor, consent) is in place before the
# facts it is about, and every run makes the same decisions (within a wave, different agencies'
# topics are read in no fixed order).
COHORT, RECORDS, RESPONSES, FACTS, CHANGES, AFTER = range(6)
WAVES = (
    "the IOM cohort",
    "statutory records: custody, supervision, referrals",
    "partners' answers: screening, acceptance, mentors, consent",
    "what happened: releases, licences, contacts, outcomes, arrests, cases",
    "changes: a withdrawn consent, corrected release dates",
    "what happened after: contacts, the Mayor's orders",
)


@dataclass
class Storylines:
    """The ids the demo's storylines (and the end-to-end test) look at."""

    s1_name: str = ""
    s1_release: str = ""  # custody.released of the S1 person
    s1_ids: dict[str, str] = field(default_factory=dict)  # scheme -> local id
    s1_mentor: str = ""  # the volunteer mentor who meets S1's person at the gate
    s3_name: str = ""
    s3_referral: str = ""  # referral.created (NPS -> MALS) with MAPPA notes
    s3_referral_id: str = ""  # the NPS's own reference for it
    s2_nominated: list[str] = field(default_factory=list)  # lcp.nominated (HMP Liverpool)
    s2_completed: list[str] = field(default_factory=list)  # lcp.completed (MALS' database)
    s5_name: str = ""
    s5_events: list[str] = field(default_factory=list)  # arrest, breach, arrest, recall
    s6_name: str = ""
    s6_events: list[str] = field(default_factory=list)  # move, move, cohort exit
    s10_events: list[str] = field(default_factory=list)  # plan, risk, order, extension, plan
    s11_events: list[str] = field(default_factory=list)  # visit, support, route application
    s7_name: str = ""
    s7_ids: dict[str, str] = field(default_factory=dict)
    s7_withdrawal: str = ""
    s7_consented: list[str] = field(default_factory=list)  # consent-based shares before it
    s7_after: str = ""  # a mentoring contact after the withdrawal
    s8_name: str = ""
    s8_original: str = ""
    s8_correction: str = ""
    s8_dates: tuple[str, str] = ("", "")
    s19_rejected: list[str] = field(default_factory=list)
    s19_case_ids: list[str] = field(default_factory=list)
    mentee_family_names: dict[str, str] = field(default_factory=dict)  # mals id -> family name

    def remap(self, ids: Mapping[str, str]) -> None:
        """Name the events a connector published in place of the generator's."""
        for name, value in vars(self).items():
            if isinstance(value, str) and value in ids:
                setattr(self, name, ids[value])
            elif isinstance(value, list):
                setattr(self, name, [ids.get(v, v) for v in value])


@dataclass
class DemoData:
    waves: list[list[Item]]
    story: Storylines
    people: dict[str, int]  # region -> how many
    mals_clients: dict[str, dict[str, Any]] = field(default_factory=dict)  # MALS' clients table
    registers: dict[str, dict[str, Any]] = field(default_factory=dict)  # names in partner files

    @property
    def events(self) -> int:
        return sum(len(w) for w in self.waves)


class _Source:
    """Builds and validates an agency's events with its own Publisher (nothing is sent here)."""

    def __init__(self, codec: Any, agency: str, seed: int) -> None:
        system, jurisdiction = SYSTEMS[agency]
        self.agency = agency
        self.seed = seed
        self.publisher = Publisher(agency=agency, source_system=system, jurisdiction=jurisdiction,
                                   codec=codec, sink=None)  # type: ignore[arg-type]  # fmt: skip

    def event(self, event_type: str, key: str, who: Mapping[str, Any], at: dt.datetime,
              payload: Mapping[str, Any], extra: Mapping[str, Any] | None = None,
              **envelope: Any) -> Item:  # fmt: skip
        source_key = f"demo-{self.seed}:{key}"
        record = self.publisher.build(
            event_type, source_key=source_key, subject=who, occurred_at=at,
            payload=payload, **envelope,
        )  # fmt: skip
        self.publisher.validate(record)
        return Item(self.agency, record, source_key, dict(extra or {}))


class Generator:
    """Fictional people and their histories, deterministic for a seed."""

    def __init__(self, codec: Any, seed: int = SEED) -> None:
        self.seed = seed
        self.src = {agency: _Source(codec, agency, seed) for agency in SYSTEMS}
        self.waves: list[list[Item]] = [[] for _ in WAVES]
        self.story = Storylines()
        self.mals_clients: dict[str, dict[str, Any]] = {}
        self.registers: dict[str, dict[str, Any]] = {}  # local id -> what only partners' files hold

    def add(self, wave: int, item: Item) -> Item:
        self.waves[wave].append(item)
        return item

    def generate(self, size: int) -> DemoData:
        uk, nl, it = max(size, 4), max(size // 4, 4), max(size // 4, 1)
        for i in range(uk):
            self.knowsley(i)
        for i in range(nl):
            self.the_hague(i)
        for i in range(it):
            self.turin(i)
        return DemoData(self.waves, self.story, {"Knowsley": uk, "The Hague": nl, "Turin": it},
                        self.mals_clients, self.registers)  # fmt: skip

    # -- Knowsley ------------------------------------------------------------------------------
    def knowsley(self, i: int) -> None:  # noqa: C901 - one person's history, in order
        rng = random.Random(f"{self.seed}:uk:{i}")
        given, family = STORY_NAMES[i] if i < len(STORY_NAMES) else (
            rng.choice(UK_GIVEN), rng.choice(UK_FAMILY))
        born = _day("1975-01-01") + dt.timedelta(days=rng.randrange(0, 22 * 365))
        risk = rng.choices(("low", "medium", "high", "very_high"), (30, 45, 20, 5))[0]
        # the storyline people: 0 = S1, 1 = S3 (NPS, MAPPA), 2 = S7 (withdraws), 3 = S8 (corrected),
        # 4 = S5 (breach, abscond, recall; NPS), 5 = S6 (moves to Liverpool, then Salford)
        body = "probation_nps" if i == 1 or risk in ("high", "very_high") else "probation_crc"
        if i in (1, 4):
            risk, body = "high", "probation_nps"
        elif i in (0, 2, 3, 5):
            risk, body = "medium", "probation_crc"
        cohort = i in (0, 2, 3, 4, 5) or (i != 1 and rng.random() < 0.55)
        referred = i in (0, 1, 2) or rng.random() < 0.6
        accepted = referred and (i in (0, 1, 2) or rng.random() < 0.9)
        consent = accepted and (i in (0, 2) or rng.random() < 0.85)
        in_custody = i == 3 or (i > 5 and rng.random() < 0.12)  # release still to come
        withdraws = i == 2 or (i > 3 and consent and rng.random() < 0.04)
        corrected = i == 3 or (i > 3 and in_custody and rng.random() < 0.25)
        if in_custody:
            release = _day("2016-01-04") + dt.timedelta(days=rng.randrange(0, 50))
        else:
            release = _day("2015-02-02") + dt.timedelta(days=rng.randrange(0, 290))
        n = 1000 + i
        ids = {
            "pnc_id": f"{rng.randrange(5, 15):02d}/{rng.randrange(10**6, 10**7):07d}"
                      f"{rng.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}",
            "prison_number": f"A{rng.randrange(1000, 9999)}{rng.choice('ABCDEFGH')}"
                             f"{rng.choice('KLMNPRST')}",
            "police_nominal_id": f"MP-{n:05d}",
            "probation_case_ref": f"{'NPS' if body == 'probation_nps' else 'CRC'}-{n:05d}",
            "mals_client_id": f"MALS-{n:05d}",
        }  # fmt: skip
        strong = {"pnc_id": ids["pnc_id"]}

        def who(scheme: str) -> dict[str, Any]:
            return subject(ids[scheme], scheme, **strong)

        police, prison, mals = self.src["police"], self.src["hmp_liverpool"], self.src["mals"]
        gender = "female" if given in UK_GIVEN[-6:] else "male"
        corvus = {"given": given, "family": family, "born": born, "gender": gender,
                  "created_on": _day("2008-01-07") + dt.timedelta(days=i * 37 % 2200),
                  "custody_ref": f"CUS-{880000 + i}"}  # what the CORVUS export holds  # fmt: skip
        booking = {"booking": f"B-{77000 + i}"}  # the prison's booking number
        mals_who = who("mals_client_id")
        probation = self.src[body]
        om = _om(rng, body)
        home = _address(rng)
        if i == 0:  # S1's Jordan goes home to Kirkby, as in the golden scenario
            home = {**home, "line1": "14 Ashworth Road", "town": "Kirkby", "postcode": "L32 7XY",
                    "area": "Knowsley"}  # fmt: skip
        corvus["borough"] = home["area"]
        sentence_days = rng.randrange(60, 330)
        received = release - dt.timedelta(days=sentence_days)
        key = f"uk{i}"
        name = f"{given} {family[0]}."

        # wave 0: who is who ------------------------------------------------------------------
        self.add(RECORDS, prison.event("custody.received", f"{key}:received", who("prison_number"),
                                 _at(received, 14), {
            "received_at": _at(received, 14), "establishment": "HMP Liverpool",
            "reason": "sentenced", "wing": rng.choice("ABCGIK"),
            "expected_release_date": release}))  # fmt: skip
        if cohort:
            entered = min(release - dt.timedelta(days=rng.randrange(20, 60)),
                          received + dt.timedelta(days=10))  # fmt: skip
            self.add(COHORT, police.event("iom.cohort_entered", f"{key}:cohort",
                                     who("police_nominal_id"), _at(entered, 10), {
                "cohort": "knowsley_iom", "borough": "Knowsley",
                "selection_method": rng.choice(("matrix_score", "prolific_definition",
                                                "manual_addition")),
                "priority_band": rng.choice(("high", "medium", "low")), "entry_date": entered,
                "selection_reason": rng.choice((
                    "Acquisitive offending twice monthly; associates with a burglary network",
                    "Three shop theft convictions in six months, heroin use",
                    "Intelligence links to a vehicle-crime group in Kirkby"))},
                extra=corvus))  # fmt: skip
        allocated = release - dt.timedelta(days=rng.randrange(25, 40))
        self.add(RECORDS, probation.event(
            "supervision.responsibility_assigned", f"{key}:supervision",
            who("probation_case_ref"), _at(allocated, 11), {
            "supervising_body": body, "offender_manager": om,
            "basis": "licence" if sentence_days > 90 else "post_sentence_supervision",
            "risk_level": risk, "effective_from": allocated,
            "supervision_end": release + dt.timedelta(days=365),
            "mappa_managed": body == "probation_nps" and rng.random() < 0.5}))  # fmt: skip
        referral_id = f"REF-{'NPS' if body == 'probation_nps' else 'CRC'}-{n}"
        mentor_id = f"MENTOR-{rng.randrange(1, 26):02d}"
        if referred:
            referred_on = allocated + dt.timedelta(days=2)
            mappa = body == "probation_nps" and (i == 1 or rng.random() < 0.5)
            referral = self.add(RECORDS, probation.event(
                "referral.created", f"{key}:referral", who("probation_case_ref"),
                _at(referred_on, 10), {
                    "referral_id": referral_id, "programme": "mentoring",
                    "referred_on": referred_on, "referrer_org": body, "receiving_org": "mals",
                    "pathways": rng.sample(("accommodation", "education_training_employment",
                                            "drugs_alcohol", "finance_benefit_debt",
                                            "attitudes_thinking_behaviour"), 2),
                    "reason": "Wants support through the gate and with housing",
                    "release_date": release, "risk_level": risk, "offender_manager": om,
                    "safety_information": rng.choice((
                        "Meet in public places for the first sessions",
                        "Non-association condition - check with OM before group activity",
                        "No known safety concerns")),
                    "offence_summary": f"{rng.choice(OFFENCES).replace('_', ' ')}, "
                                       f"{rng.randrange(2, 15)} previous convictions",
                    "mappa_notes": "MAPPA level 2; victim lives in Halewood" if mappa else None},
                sensitivity="mappa" if mappa else "standard"))  # fmt: skip
            if i == 1:
                self.story.s3_name, self.story.s3_referral = name, referral.event_id
                self.story.s3_referral_id = referral_id
            screened = referred_on + dt.timedelta(days=3)
            self.add(RESPONSES, mals.event("referral.screened", f"{key}:screened", mals_who,
                                   _at(screened, 15), {
                "referral_id": referral_id, "screened_on": screened,
                "outcome": "suitable" if accepted else "unsuitable",
                "screened_by": "MALS manager", "risk_checked": True,
                "notes": "Keen; talked about his family"}))  # fmt: skip
        if accepted:
            start = referred_on + dt.timedelta(days=4)
            self.add(RESPONSES, mals.event("referral.accepted", f"{key}:accepted", mals_who,
                                   _at(start, 10), {
                "referral_id": referral_id, "accepted_on": start, "programme": "mentoring",
                "start_date": release}))  # fmt: skip
            self.add(RESPONSES, mals.event("mentor.assigned", f"{key}:mentor", mals_who,
                                   _at(start, 11), {
                "organisation": "mals", "mentor_id": mentor_id, "assigned_on": start,
                "referral_id": referral_id, "commitment_months": 12,
                "first_meeting_at": _at(release, 9, 30),
                "first_meeting_place": "HMP Liverpool gate, Hornby Road",
                "meeting_arrangements": "Meet at the gate at 09:30, bus to Kirkby together"}))
            self.add(RESPONSES, mals.event("person.registered", f"{key}:registered", mals_who,
                                   _at(start, 12), {
                "given_name": given, "family_name": family, "date_of_birth": born,
                "gender": "female" if given in UK_GIVEN[-6:] else "male",
                "home_area": home["area"], "address": home,
                "phone": f"07700 9{rng.randrange(10000, 99999)}"}))  # fmt: skip
            self.story.mentee_family_names[ids["mals_client_id"]] = family
            self.mals_clients[ids["mals_client_id"]] = {
                "client_id": ids["mals_client_id"], "first_name": given, "surname": family,
                "dob": born, "area": home["area"], "prison_no": ids["prison_number"],
                "created_by": "MALS manager"}  # fmt: skip
        if consent:
            scopes = ["share_progress_with_om", "share_progress_with_iom"]
            if i == 2 or rng.random() < 0.3:
                scopes.append("research")
            consent_id = f"CONS-{n}"
            self.add(RESPONSES, mals.event("consent.given", f"{key}:consent", who("mals_client_id"),
                                   _at(start, 12, 30), {
                "consent_id": consent_id, "scopes": scopes, "given_on": start,
                "captured_by": "MALS lead mentor", "method": "written"}))  # fmt: skip

        # wave 1: what happened ---------------------------------------------------------------
        scheduled_on = release - dt.timedelta(days=rng.randrange(12, 25))
        plan = {
            "release_date": release, "release_type": "on_licence", "establishment": "HMP Liverpool",
            "release_address": home, "release_area": home["area"], "supervising_body": body,
            "offender_manager": om, "licence_end_date": release + dt.timedelta(days=180),
        }  # fmt: skip
        if corrected:
            keyed = release + dt.timedelta(days=rng.choice((7, 14, 21, -7)))
            original = self.add(FACTS, prison.event("custody.release_scheduled", f"{key}:scheduled",
                                                who("prison_number"), _at(scheduled_on, 8),
                                                {**plan, "release_date": keyed},
                                                extra=booking))  # fmt: skip
            fixed = self.add(CHANGES, prison.event(
                "custody.release_scheduled", f"{key}:scheduled:corrected", who("prison_number"),
                _at(scheduled_on + dt.timedelta(days=1), 8), plan,
                supersedes_event_id=original.event_id, correction_reason="keying_error",
                extra=booking))
            if i == 3:
                self.story.s8_name = name
                self.story.s8_original, self.story.s8_correction = original.event_id, fixed.event_id
                self.story.s8_dates = (keyed.isoformat(), release.isoformat())
        else:
            self.add(FACTS, prison.event("custody.release_scheduled", f"{key}:scheduled",
                                     who("prison_number"), _at(scheduled_on, 8), plan,
                                     extra=booking))  # fmt: skip
        conditions = [
            {"condition_id": "C1", "condition_type": "reside_at",
             "summary": "Reside at an approved address",
             "details": f"Reside at {home['line1']}, {home['town']}", "reside_at": home},
            {"condition_id": "C2", "condition_type": "report_to_om",
             "summary": "Report to the offender manager as directed"},
        ]  # fmt: skip
        if rng.random() < 0.5:
            conditions.append({"condition_id": "C3", "condition_type": "curfew",
                               "summary": "Curfew 19:00 to 07:00",
                               "details": "Electronically monitored curfew at the release address",
                               "curfew_from": "19:00", "curfew_until": "07:00"})  # fmt: skip
        if i == 0 or rng.random() < 0.35:
            pair = rng.sample(ASSOCIATES, 2)
            conditions.append({"condition_id": "C4", "condition_type": "non_association",
                               "summary": "Non-association with named individuals - check with "
                                          "OM before group activity",
                               "details": f"Not to contact {pair[0]} or {pair[1]}",
                               "named_associates": pair})  # fmt: skip
        if rng.random() < 0.15:
            zone = rng.choice(("Liverpool city centre", "Huyton village", "Prescot town centre"))
            conditions.append({"condition_id": "C5", "condition_type": "exclusion_zone",
                               "summary": f"Excluded from {zone}", "exclusion_area": zone,
                               "details": f"Not to enter {zone} as marked on the licence map",
                               "exclusion_zone_geometry": '{"type":"Polygon","coordinates":'
                                                          '[[[-2.85,53.41],[-2.84,53.42]]]}',
                               "victim_related": rng.random() < 0.5})  # fmt: skip
        if not in_custody:
            self.add(FACTS, prison.event("licence.conditions_set", f"{key}:licence",
                                     who("prison_number"), _at(release - dt.timedelta(days=3), 15),
                                     {"licence_start": release,
                                      "licence_end": release + dt.timedelta(days=180),
                                      "life_licence": False, "conditions": conditions}))
            released = self.add(FACTS, prison.event(
                "custody.released", f"{key}:released", who("prison_number"),
                _at(release, 9, 30), {
                    "released_at": _at(release, 9, 30),
                    "release_type": rng.choices(("on_licence", "home_detention_curfew",
                                                 "end_of_sentence"), (80, 15, 5))[0],
                    "establishment": "HMP Liverpool", "at_liberty": True,
                    "destination_address": home, "destination_area": home["area"],
                    "supervising_body": body, "offender_manager": om,
                    "supervision_end_date": release + dt.timedelta(days=365)}))  # fmt: skip
            if i == 0:
                self.story.s1_name, self.story.s1_release = name, released.event_id
                self.story.s1_mentor = mentor_id
                self.story.s1_ids = dict(ids)
            assessed = release + dt.timedelta(days=rng.randrange(20, 45))
            self.add(FACTS, probation.event("assessment.risk_of_harm", f"{key}:rosh",
                                        who("probation_case_ref"), _at(assessed, 14), {
                "assessed_on": assessed, "risk_level": risk, "assessor": om, "tool": "OASys",
                "mappa_eligible": body == "probation_nps",
                "summary": "Risk to known adults when using; protective factors: family support",
                "next_review_date": assessed + dt.timedelta(days=90)}))  # fmt: skip
            if cohort:
                scored = release + dt.timedelta(days=14)
                score = rng.randrange(300, 990)
                self.add(FACTS, police.event("police.priority_score_updated", f"{key}:score",
                                         who("police_nominal_id"), _at(scored, 7), {
                    "score": score, "cost_of_crime": decimal.Decimal(
                        f"{rng.randrange(5000, 60000)}.{rng.randrange(0, 100):02d}"),
                    "score_date": scored, "matrix_version": "corvus-2015.1",
                    "borough": "Knowsley", "priority_band": rng.choice(("high", "medium")),
                    "previous_score": score + rng.randrange(-80, 80)},
                    sensitivity="intelligence", extra=corvus))  # fmt: skip
            if i == 4:
                self.s5_breach(key, name, who, release, corvus)
            if i == 5:
                self.s6_moves(key, name, who, release, home, corvus)
            if i > 5 and rng.random() < 0.2:
                arrested = release + dt.timedelta(days=rng.randrange(30, 200))
                offence = rng.choice(OFFENCES)
                self.add(FACTS, police.event("police.arrest", f"{key}:arrest",
                                         who("police_nominal_id"), _at(arrested, 22, 10), {
                    "arrested_at": _at(arrested, 22, 10), "force": "police",
                    "offence_type": offence, "area": rng.choice(("Huyton", "Kirkby", "Prescot")),
                    "outcome": rng.choice(("charged", "released_under_investigation", "bailed",
                                           "recalled")),
                    "circumstances": "Seen with known associates near the shopping parade",
                    "intelligence_ref": f"INT-{rng.randrange(10000, 99999)}"},
                    extra=corvus))  # fmt: skip
            if accepted:
                contacts = rng.randrange(2, 5) if i == 2 else rng.randrange(1, 4)
                for c in range(contacts):
                    when = _at(release + dt.timedelta(days=7 * c), 9 if c == 0 else 14, 30)
                    item = self.add(FACTS, mals.event("mentoring.contact", f"{key}:contact:{c}",
                                                  who("mals_client_id"), when, {
                        "contact_id": f"CT-{n}-{c + 1}", "contact_at": when,
                        "mode": "gate_meeting" if c == 0 else rng.choice(
                            ("face_to_face", "telephone", "gym_or_activity", "home_visit")),
                        "duration_minutes": rng.choice((30, 45, 60, 90, 120)),
                        "pathways": rng.sample(("accommodation", "finance_benefit_debt",
                                                "education_training_employment", "health",
                                                "drugs_alcohol"), 2),
                        "mentor_id": mentor_id, "family_involved": rng.random() < 0.2,
                        "notes": rng.choice(CONTACT_NOTES)}))  # fmt: skip
                    if i == 2 and consent:
                        self.story.s7_consented.append(item.event_id)
                if consent and (i == 2 or rng.random() < 0.45):
                    housed = release + dt.timedelta(days=rng.randrange(25, 70))
                    town, outward, area = rng.choice(UK_TOWNS[:7])
                    item = self.add(FACTS, mals.event("outcome.housing_secured", f"{key}:housed",
                                                  who("mals_client_id"), _at(housed, 12), {
                        "housing_type": rng.choice(("social_rent", "supported_housing",
                                                    "private_rent")),
                        "secured_on": housed, "provider": "Knowsley Housing Trust",
                        "address": {"line1": f"Flat {rng.randrange(1, 40)}, "
                                             f"{rng.choice(UK_STREETS)}",
                                    "town": town, "postcode": f"{outward} 4QT", "area": area,
                                    "country": "GB", "kind": "home"},
                        "supported_by": "mals"}))  # fmt: skip
                    if i == 2:
                        self.story.s7_consented.append(item.event_id)
                if consent and i != 2 and rng.random() < 0.3:
                    started = release + dt.timedelta(days=rng.randrange(40, 120))
                    self.add(FACTS, mals.event("outcome.employment_started", f"{key}:job",
                                           who("mals_client_id"), _at(started, 9), {
                        "employment_type": rng.choice(("full_time", "part_time",
                                                       "work_placement")),
                        "started_on": started,
                        "employer": rng.choice(("Kirkby Recycling Ltd", "Knowsley Groundworks",
                                                "Merseyside Food Bank (placement)")),
                        "sector": rng.choice(("recycling", "construction", "charity")),
                        "hours_per_week": rng.choice((16, 24, 37)), "supported_by": "mals"}))

        if 6 <= i < 18:  # S2: twelve nominations from one wing for the in-prison LCP
            self.s2_lcp(i, key, n, who, received, release, given, family, born, home)

        # waves 2 and 3: a withdrawal, and a contact after it -----------------------------------
        if withdraws and not in_custody:
            withdrawn_on = release + dt.timedelta(days=80)
            withdrawal = self.add(CHANGES, mals.event("consent.withdrawn", f"{key}:withdrawn",
                                                who("mals_client_id"), _at(withdrawn_on, 10), {
                "consent_id": consent_id, "scopes": scopes, "withdrawn_on": withdrawn_on,
                "captured_by": "MALS lead mentor",
                "reason": "Does not want the police to know how mentoring is going"}))  # fmt: skip
            after = _at(withdrawn_on + dt.timedelta(days=9), 15)
            later = self.add(AFTER, mals.event("mentoring.contact", f"{key}:contact:after",
                                           who("mals_client_id"), after, {
                "contact_id": f"CT-{n}-after", "contact_at": after, "mode": "home_visit",
                "duration_minutes": 60, "pathways": ["accommodation"], "mentor_id": mentor_id,
                "notes": "Still meeting; settled in the new flat"}))  # fmt: skip
            if i == 2:
                self.story.s7_name, self.story.s7_ids = name, dict(ids)
                self.story.s7_withdrawal, self.story.s7_after = withdrawal.event_id, later.event_id

    def s2_lcp(self, i: int, key: str, n: int, who: Any, received: dt.date,
               release: dt.date, given: str, family: str, born: dt.date,
               home: Mapping[str, Any]) -> None:  # fmt: skip
        """S2: HMP Liverpool nominates prisoners of wing G for MALS' Life Change Programme; those
        released within six months of the run are enrolled (MALS' manager decides), attend in
        MALS' database (lcp_attendance), and graduate (an 'LCP graduation' outcome)."""
        prison, mals = self.src["hmp_liverpool"], self.src["mals"]
        nominated = max(received + dt.timedelta(days=5), _day("2015-01-12"))
        run = "LCP-HMPL-2015-1"
        item = self.add(RECORDS, prison.event("lcp.nominated", f"{key}:lcp:nominated",
                                              who("prison_number"), _at(nominated, 11), {
            "nomination_id": f"NOM-{n}", "run_id": run, "nominated_on": nominated,
            "nominated_by": "Wing G governor", "establishment": "HMP Liverpool", "wing": "G",
            "home_area": home["area"], "expected_release_date": release, "voluntary": True}))
        self.story.s2_nominated.append(item.event_id)
        starts = _day("2015-02-02")
        if release > starts + dt.timedelta(days=183) or release < starts + dt.timedelta(days=42):
            return  # not released within six months of the run (or before its end): not enrolled
        client = f"MALS-{n:05d}"
        who_mals = subject(client, "mals_client_id", pnc_id=who("pnc_id")["local_id"])
        self.mals_clients.setdefault(client, {
            "client_id": client, "first_name": given, "surname": family, "dob": born,
            "area": home["area"], "prison_no": who("prison_number")["local_id"],
            "created_by": "MALS LCP facilitator"})  # fmt: skip
        self.story.mentee_family_names.setdefault(client, family)
        self.add(RESPONSES, mals.event("lcp.enrolled", f"{key}:lcp:enrolled", who_mals,
                                       _at(starts - dt.timedelta(days=7), 10), {
            "run_id": run, "enrolled_on": starts - dt.timedelta(days=7), "setting": "custodial"}))
        themes = ("communication", "values_and_beliefs", "making_a_change", "cv_and_interview",
                  "victim_awareness", "goal_setting")  # fmt: skip
        for s_ in range(6):
            day = starts + dt.timedelta(days=7 * s_)
            item = self.add(FACTS, mals.event("lcp.session_attended", f"{key}:lcp:{s_}", who_mals,
                                              _at(day, 9), {
                "run_id": run, "session_number": s_ + 1, "session_date": day, "period": "am",
                "theme": themes[s_], "duration_minutes": 180,
                "facilitator_notes": "Spoke for the first time about his childhood"}))
        done = self.add(FACTS, mals.event("lcp.completed", f"{key}:lcp:completed", who_mals,
                                          _at(starts + dt.timedelta(days=42), 9), {
            "run_id": run, "completed_on": starts + dt.timedelta(days=42),
            "certificate_awarded": True, "family_attended": i % 2 == 0, "sessions_attended": 6,
            "sessions_total": 6}))  # fmt: skip
        self.story.s2_completed.append(done.event_id)

    def s5_breach(self, key: str, name: str, who: Any, release: dt.date,
                  corvus: Mapping[str, Any]) -> None:  # fmt: skip
        """S5: arrested in his exclusion zone, a breach recorded by the NPS, whereabouts unknown,
        arrested again in a stolen car, recalled to HMP Liverpool."""
        police, nps = self.src["police"], self.src["probation_nps"]
        first, second = release + dt.timedelta(days=40), release + dt.timedelta(days=47)
        a1 = self.add(CHANGES, police.event("police.arrest", f"{key}:arrest:zone",
                                            who("police_nominal_id"), _at(first, 21, 40), {
            "arrested_at": _at(first, 21, 40), "force": "police", "offence_type": "breach_of_order",
            "area": "Liverpool", "outcome": "released_under_investigation"},
            extra={**corvus, "custody_ref": f"CUS-{key.upper()}-1"}))  # fmt: skip
        breach = self.add(CHANGES, nps.event("supervision.breach_recorded", f"{key}:breach",
                                             who("probation_case_ref"),
                                             _at(first + dt.timedelta(days=1), 9), {
            "breach_date": first, "breach_type": "exclusion_zone", "condition_id": "C5",
            "whereabouts_unknown": True, "action_taken": "recall",
            "details": "Arrested inside the exclusion zone; not at the approved premises since"}))
        a2 = self.add(AFTER, police.event("police.arrest", f"{key}:arrest:car",
                                          who("police_nominal_id"), _at(second, 2, 15), {
            "arrested_at": _at(second, 2, 15), "force": "police", "offence_type": "vehicle_theft",
            "area": "Huyton", "outcome": "recalled",
            "circumstances": "Passenger in a stolen Ford Focus stopped on the M57"},
            extra={**corvus, "custody_ref": f"CUS-{key.upper()}-2"}))  # fmt: skip
        back = self.add(AFTER, self.src["hmp_liverpool"].event(
            "custody.received", f"{key}:recalled", who("prison_number"), _at(second, 16), {
                "received_at": _at(second, 16), "establishment": "HMP Liverpool",
                "reason": "recalled", "wing": "K"}))  # fmt: skip
        self.story.s5_name = name
        self.story.s5_events = [a1.event_id, breach.event_id, a2.event_id, back.event_id]

    def s6_moves(self, key: str, name: str, who: Any, release: dt.date,
                 home: Mapping[str, Any], corvus: Mapping[str, Any]) -> None:  # fmt: skip
        """S6: from Knowsley to Liverpool, then out of Merseyside to Salford: the IOM cohort
        exit (moved out of the force area), all from CORVUS."""
        police = self.src["police"]
        moved, left = release + dt.timedelta(days=60), release + dt.timedelta(days=150)
        liverpool = {"line1": "31 Breck Road", "line2": None, "town": "Liverpool",
                     "postcode": "L6 4BZ", "area": "Liverpool", "country": "GB", "kind": "home"}
        salford = {"line1": "8 Eccles New Road", "line2": None, "town": "Salford",
                   "postcode": "M5 4WH", "area": "Salford", "country": "GB", "kind": "home"}
        m1 = self.add(CHANGES, police.event("person.address_changed", f"{key}:moved:1",
                                            who("police_nominal_id"), _at(moved, 12), {
            "address": liverpool, "effective_from": moved, "previous_area": home["area"]},
            extra=corvus))  # fmt: skip
        m2 = self.add(AFTER, police.event("person.address_changed", f"{key}:moved:2",
                                          who("police_nominal_id"), _at(left, 12), {
            "address": salford, "effective_from": left, "previous_area": "Liverpool"},
            extra=corvus))  # fmt: skip
        out = self.add(AFTER, police.event("iom.cohort_exited", f"{key}:exit",
                                           who("police_nominal_id"), _at(left, 12), {
            "cohort": "knowsley_iom", "borough": "Knowsley", "exit_date": left,
            "exit_reason": "moved_out_of_force_area", "destination_area": "Salford"},
            extra=corvus))  # fmt: skip
        self.story.s6_name = name
        self.story.s6_events = [m1.event_id, m2.event_id, out.event_id]

    # -- The Hague -----------------------------------------------------------------------------
    def the_hague(self, i: int) -> None:
        rng = random.Random(f"{self.seed}:nl:{i}")
        bsn = _bsn(rng)
        file_id = f"SH-2015-{100 + i:04d}"
        case_id = f"SHC-2015-{100 + i:04d}"
        who = subject(file_id, "sh_file_id", bsn=bsn)
        sh = self.src["safety_house"]
        reported = _day("2015-02-02") + dt.timedelta(days=rng.randrange(0, 240))
        key = f"nl{i}"
        if i < 2:  # S19: the restricted programme (NL extremism) never enters the hub
            tagged = i == 0
            item = self.add(FACTS, sh.event(
                "sh.case_reported", f"{key}:restricted", who, _at(reported, 9), {
                    "case_id": case_id, "reported_on": reported, "reported_by_org": "nl_police",
                    "reason": "Signals of radicalisation reported by the neighbourhood officer",
                    "municipality": "The Hague"},
                sensitivity="restricted-programme",
                compartment="nl_extremism" if tagged else None))  # fmt: skip
            self.story.s19_rejected.append(item.event_id)
            self.story.s19_case_ids.append(case_id)
            if tagged:
                item = self.add(FACTS, sh.event(
                    "assessment.extremism_risk", f"{key}:extremism", who,
                    _at(reported + dt.timedelta(days=3), 9), {
                        "assessed_on": reported + dt.timedelta(days=3),
                        "category": "potential_traveller",
                        "summary": "Assessment by the restricted programme team"},
                    sensitivity="restricted-programme", compartment="nl_extremism"))  # fmt: skip
                self.story.s19_rejected.append(item.event_id)
            return
        needs = rng.sample(("nl_sh_drugs_dependency", "nl_sh_housing", "nl_sh_domestic_violence",
                            "nl_sh_children"), rng.randrange(1, 3))  # fmt: skip
        reporter = rng.choice(("nl_police", "nl_probation", "hague_municipality"))
        self.add(FACTS, sh.event("sh.case_reported", f"{key}:reported", who, _at(reported, 9), {
            "case_id": case_id, "reported_on": reported, "reported_by_org": reporter,
            "reason": rng.choice((
                "Repeated shoplifting and bicycle theft, drug and alcohol dependent",
                "Domestic violence call-outs; partner and two children at the address",
                "Nuisance and threats towards neighbours in " + rng.choice(NL_DISTRICTS))),
            "needs": needs, "family_case": "nl_sh_children" in needs,
            "municipality": "The Hague"}))  # fmt: skip
        screened = reported + dt.timedelta(days=7)
        self.add(FACTS, sh.event("sh.screening_completed", f"{key}:screened", who,
                                 _at(screened, 10), {
            "case_id": case_id, "screened_on": screened, "complex_case": True,
            "probation_input": rng.random() < 0.6, "accepted": True,
            "programme": "domestic_violence" if "nl_sh_domestic_violence" in needs else "adult",
            "process_manager": rng.choice(("M. de Wit", "A. Boukhari", "J. van Leeuwen")),
            "notes": "Partners agree the case is complex; family approach needed"}))  # fmt: skip
        conference = screened + dt.timedelta(days=7)
        self.add(FACTS, sh.event("sh.case_conference_held", f"{key}:conference", who,
                             _at(conference, 13), {
            "conference_id": f"SHCO-{100 + i:04d}", "case_id": case_id, "held_on": conference,
            "chair": "Process manager",
            "partners_present": ["nl_police", "nl_probation", "hague_municipality",
                                 "hague_aftercare"], "discussed_verbally": False}))  # fmt: skip
        agreed = conference + dt.timedelta(days=5)
        tasks = [
            {"task_id": "T1", "organisation": "nl_police",
             "description": "Person-oriented approach by the neighbourhood officer",
             "due_date": agreed + dt.timedelta(days=30), "status": "in_progress"},
            {"task_id": "T2", "organisation": "nl_probation",
             "description": "Supervision of the special conditions", "status": "planned"},
            {"task_id": "T3", "organisation": "hague_aftercare",
             "description": "Income, identity papers and debt counselling", "status": "planned"},
        ]  # fmt: skip
        if "nl_sh_housing" in needs:
            tasks.append({"task_id": "T4", "organisation": "nl_housing",
                          "description": "Supported housing place", "status": "planned"})
        self.add(FACTS, sh.event("sh.action_plan_agreed", f"{key}:plan", who, _at(agreed, 11), {
            "plan_id": f"SHP-{100 + i:04d}", "case_id": case_id, "agreed_on": agreed,
            "term": "short_term", "approach": rng.choice(("treatment",
                                                          "treatment_with_conditional_punishment")),
            "lead_org": rng.choice(("nl_probation", "hague_municipality")),
            "goals": ["Stable housing", "No new incidents for six months"], "tasks": tasks,
            "review_date": agreed + dt.timedelta(days=60)}))  # fmt: skip
        reviewed = agreed + dt.timedelta(days=60)
        self.add(FACTS, sh.event("sh.review_held", f"{key}:review", who, _at(reviewed, 11), {
            "plan_id": f"SHP-{100 + i:04d}", "case_id": case_id, "held_on": reviewed,
            "tasks": [{**t, "status": rng.choice(("achieved", "in_progress"))} for t in tasks],
            "notes": "Good progress; the family is engaging"}))  # fmt: skip
        if i == 2:
            self.s11_aftercare(i, key, file_id, reported)
        if i == 3:
            self.s10_mr_x(i, key, who, case_id, agreed)
        if i == 2 or rng.random() < 0.3:  # S9: the Mayor's area ban
            issued = agreed + dt.timedelta(days=2)
            district = rng.choice(NL_DISTRICTS)
            self.add(AFTER, self.src["hague_municipality"].event(
                "mayor.order_issued", f"{key}:order", who,
                _at(issued, 16), {
                    "order_id": f"BURG-2015-{i:04d}", "order_type": "area_ban",
                    "issued_on": issued, "issued_by": "Burgemeester van Den Haag",
                    "legal_basis": "APV Den Haag art. 2:79",
                    "valid_from": issued, "valid_until": issued + dt.timedelta(days=90),
                    "area_name": district,
                    "area_geometry": '{"type":"Polygon",'
                                     '"coordinates":[[[4.30,52.07],[4.31,52.06]]]}',
                    "protected_party_ref": f"PP-{rng.randrange(1000, 9999)}"}))  # fmt: skip

    def s10_mr_x(self, i: int, key: str, who: Any, case_id: str, agreed: dt.date) -> None:
        """S10: Mr X's early release, co-ordinated by the Safety House: a pre-release plan with a
        task per partner, NL probation's risk assessment, the Mayor's spatial restraining order
        (the victim's family is the protected party) and its extension, a job, the long-term
        plan."""
        sh, mayor = self.src["safety_house"], self.src["hague_municipality"]
        plan = {"case_id": case_id, "term": "pre_release", "approach": "treatment",
                "lead_org": "nl_probation", "goals": ["A safe return", "Work"], "tasks": [
                    {"task_id": "T1", "organisation": "nl_probation",
                     "description": "Risk assessment and job search", "status": "in_progress"},
                    {"task_id": "T2", "organisation": "nl_police",
                     "description": "Liaison with the victim's family; emergency line",
                     "status": "in_progress"},
                    {"task_id": "T3", "organisation": "hague_municipality",
                     "description": "Spatial restraining order", "status": "planned"},
                    {"task_id": "T4", "organisation": "hague_aftercare",
                     "description": "Benefits, travel costs, ID papers", "status": "planned"}]}
        pre = self.add(FACTS, sh.event("sh.action_plan_agreed", f"{key}:mrx:plan", who,
                                       _at(agreed + dt.timedelta(days=1), 11), {
            **plan, "plan_id": f"SHP-X-{100 + i:04d}", "agreed_on": agreed + dt.timedelta(days=1),
            "review_date": agreed + dt.timedelta(days=30)}))  # fmt: skip
        risk = self.add(FACTS, self.src["nl_probation"].event(
            "assessment.risk_of_harm", f"{key}:mrx:risk", who,
            _at(agreed + dt.timedelta(days=3), 14), {
                "assessed_on": agreed + dt.timedelta(days=3), "risk_level": "high",
                "assessor": {"organisation": "nl_probation", "role": "reclasseringswerker",
                             "name": "E. Bouzid"}, "tool": "RISc",
                "summary": "Risk to the victim's family if contact is sought"}))  # fmt: skip
        order_area = "Moerwijk-Oost (around the family's street)"
        first = self.add(FACTS, mayor.event("mayor.order_issued", f"{key}:mrx:order", who,
                                            _at(agreed + dt.timedelta(days=5), 16), {
            "order_id": f"BURG-X-{i:04d}", "order_type": "spatial_restraining_order",
            "issued_on": agreed + dt.timedelta(days=5), "issued_by": "Burgemeester van Den Haag",
            "legal_basis": "Gemeentewet art. 172a", "valid_from": agreed + dt.timedelta(days=7),
            "valid_until": agreed + dt.timedelta(days=97), "area_name": order_area,
            "area_geometry": '{"type":"Polygon","coordinates":[[[4.28,52.05],[4.29,52.04]]]}',
            "protected_party_ref": f"PP-X-{i:04d}"}))  # fmt: skip
        longer = self.add(AFTER, mayor.event("mayor.order_issued", f"{key}:mrx:extended", who,
                                             _at(agreed + dt.timedelta(days=90), 16), {
            "order_id": f"BURG-X-{i:04d}-V", "order_type": "spatial_restraining_order",
            "issued_on": agreed + dt.timedelta(days=90), "issued_by": "Burgemeester van Den Haag",
            "legal_basis": "Gemeentewet art. 172a", "valid_from": agreed + dt.timedelta(days=97),
            "valid_until": agreed + dt.timedelta(days=187), "area_name": order_area,
            "extends_order_id": f"BURG-X-{i:04d}", "protected_party_ref": f"PP-X-{i:04d}"}))
        later = self.add(AFTER, sh.event("sh.action_plan_agreed", f"{key}:mrx:longplan", who,
                                         _at(agreed + dt.timedelta(days=120), 11), {
            **plan, "term": "long_term", "plan_id": f"SHP-XL-{100 + i:04d}",
            "agreed_on": agreed + dt.timedelta(days=120),
            "review_date": agreed + dt.timedelta(days=180)}))  # fmt: skip
        self.story.s10_events = [pre.event_id, risk.event_id, first.event_id, longer.event_id,
                                 later.event_id]  # fmt: skip

    def s11_aftercare(self, i: int, key: str, file_id: str, reported: dt.date) -> None:
        """S11: the Aftercare Team visits him in prison (needs in the five areas), gives support
        within 72 hours of release, and applies for the housing route."""
        ac = self.src["hague_aftercare"]
        who = subject(f"NZ-2015-{100 + i:04d}", "aftercare_client_id", sh_file_id=file_id)
        visited, released = reported - dt.timedelta(days=20), reported - dt.timedelta(days=6)
        visit = self.add(FACTS, ac.event("aftercare.prison_visit", f"{key}:visit", who,
                                         _at(visited, 10), {
            "visited_on": visited, "establishment": "PI Haaglanden",
            "expected_release_date": released,
            "needs": [
                {"pathway": "nl_ac_identity_papers", "need_code": "no_identity_papers",
                 "summary": "ID card expired in custody", "support_arranged": "Application"},
                {"pathway": "nl_ac_accommodation", "need_code": "homeless",
                 "summary": "No address after release", "support_arranged": "Night shelter"},
                {"pathway": "nl_ac_income", "need_code": "no_income",
                 "summary": "No benefit yet", "support_arranged": "Benefit application"},
                {"pathway": "nl_ac_debt", "need_code": "debt",
                 "summary": "Fines and rent arrears", "support_arranged": "Debt counselling"},
                {"pathway": "nl_ac_care", "need_code": "drug_dependency",
                 "summary": "Wants treatment", "support_arranged": "Intake booked"}]}))
        support = self.add(FACTS, ac.event("aftercare.release_support_given", f"{key}:support",
                                           who, _at(released + dt.timedelta(days=1), 10), {
            "given_at": _at(released + dt.timedelta(days=1), 10),
            "items": ["supermarket_coupons", "debit_card", "travel_coupons"],
            "notes": "Benefit applied for; debts of about EUR 3,400 to the CJIB"}))  # fmt: skip
        route = self.add(FACTS, ac.event("route.application", f"{key}:route", who,
                                         _at(released + dt.timedelta(days=3), 11), {
            "application_id": f"ROUTE-2015-{100 + i:04d}", "route": "housing",
            "applied_on": released + dt.timedelta(days=3), "age_years": 25, "homeless": True,
            "on_probation": False, "outstanding_prosecutions": False}))  # fmt: skip
        self.story.s11_events = [visit.event_id, support.event_id, route.event_id]

    # -- Turin ---------------------------------------------------------------------------------
    def turin(self, i: int) -> None:
        rng = random.Random(f"{self.seed}:it:{i}")
        given, family = rng.choice(IT_GIVEN), rng.choice(IT_FAMILY)
        born = _day("1978-01-01") + dt.timedelta(days=rng.randrange(0, 20 * 365))
        cf = _codice_fiscale(given, family, born, female=given in ("Giulia", "Elena"))
        participant = f"ERI-2015-{100 + i:04d}"
        self.registers[participant] = {"nome": given, "cognome": family, "nato": born}
        key = f"it{i}"
        supervised = rng.random() < 0.5
        eri = self.src["eri"]
        referrer = self.src["uepe" if supervised else "it_social_services"]
        referrer_who = (subject(f"UEPE-TO-{3000 + i}", "uepe_file_id", codice_fiscale=cf)
                        if supervised else
                        subject(f"CISAP-{5000 + i}", "social_services_ref", codice_fiscale=cf))
        eri_who = subject(participant, "eri_participant_id", codice_fiscale=cf)
        invited = _day("2015-01-12") + dt.timedelta(days=rng.randrange(0, 200))
        self.add(RECORDS, referrer.event("referral.created", f"{key}:referral", referrer_who,
                                   _at(invited, 10), {
            "referral_id": f"INV-TO-{100 + i}", "programme": rng.choice(("lcp",
                                                                        "employment_support")),
            "referred_on": invited, "referrer_org": referrer.agency, "receiving_org": "eri",
            "pathways": ["it_eri_employment", rng.choice(("it_eri_food", "it_eri_company"))],
            "reason": "Looking for work after the end of the sentence",
            "offence_summary": rng.choice(("furto aggravato", "spaccio", "rapina")) +
                               f", {rng.randrange(1, 6)} precedenti"}))  # fmt: skip
        consent_on = invited + dt.timedelta(days=6)
        self.add(RESPONSES, eri.event("consent.given", f"{key}:consent", eri_who,
                                      _at(consent_on, 10), {
            "consent_id": f"ERI-CONS-{100 + i}",
            "scopes": ["share_with_social_services", "share_with_uepe"],
            "given_on": consent_on, "captured_by": "ERI coordinator", "method": "written"}))
        if supervised:
            self.add(RESPONSES, referrer.event("supervision.responsibility_assigned", f"{key}:uepe",
                                       referrer_who, _at(invited + dt.timedelta(days=2), 9), {
                "supervising_body": "uepe",
                "offender_manager": {"organisation": "uepe", "role": "funzionario UEPE",
                                     "name": rng.choice(("Dott.ssa Ferro", "Dott. Bassi")),
                                     "phone": "011 555 0142"},
                "basis": "alternative_measure", "effective_from": invited,
                "risk_level": "low", "mappa_managed": False}))  # fmt: skip
        run_id = f"LCP-TO-2015-{1 + i % 4}"
        enrolled = consent_on + dt.timedelta(days=10)
        self.add(FACTS, eri.event("lcp.enrolled", f"{key}:enrolled", eri_who, _at(enrolled, 10), {
            "run_id": run_id, "enrolled_on": enrolled, "setting": "community"}))  # fmt: skip
        themes = ("goal_setting", "communication", "values_and_beliefs", "cv_and_interview",
                  "making_a_change", "graduation")  # fmt: skip
        sessions = rng.randrange(3, 7)
        for s in range(sessions):
            day = enrolled + dt.timedelta(days=7 * (s + 1))
            self.add(FACTS, eri.event("lcp.session_attended", f"{key}:session:{s}", eri_who,
                                  _at(day, 14), {
                "run_id": run_id, "session_number": s + 1, "session_date": day, "period": "pm",
                "theme": themes[s % len(themes)], "duration_minutes": 150,
                "facilitator_notes": "Participates well; talked about his children"}))  # fmt: skip
        finished = enrolled + dt.timedelta(days=7 * (sessions + 1))
        if rng.random() < 0.8:
            self.add(FACTS, eri.event("lcp.completed", f"{key}:completed", eri_who,
                                  _at(finished, 16), {
                "run_id": run_id, "completed_on": finished, "certificate_awarded": True,
                "family_attended": rng.random() < 0.5, "sessions_attended": sessions,
                "sessions_total": 6, "pathway": "it_eri_employment"}))  # fmt: skip
            employer = rng.choice(IT_EMPLOYERS)
            placed = finished + dt.timedelta(days=14)
            self.add(FACTS, eri.event("lcp.work_experience_started", f"{key}:placement", eri_who,
                                  _at(placed, 9), {
                "run_id": run_id, "employer": employer, "placement_type": "work_placement",
                "started_on": placed}))  # fmt: skip
            if rng.random() < 0.5:
                hired = placed + dt.timedelta(days=60)
                self.add(FACTS, eri.event("outcome.employment_started", f"{key}:job", eri_who,
                                      _at(hired, 9), {
                    "employment_type": rng.choice(("job_contract", "trial_position",
                                                   "job_scholarship")),
                    "started_on": hired, "employer": employer, "supported_by": "eri"}))  # fmt: skip
        else:
            self.add(FACTS, eri.event("lcp.withdrawn", f"{key}:withdrawn", eri_who,
                                      _at(finished, 16), {
                "run_id": run_id, "withdrawn_on": finished, "reason": "dropped_out",
                "notes": "Stopped coming after the third session"}))  # fmt: skip


def generate(codec: Any, size: int = DEFAULT_SIZE, seed: int = SEED) -> DemoData:
    """The demo's events, in waves, built and validated with each agency's Publisher."""
    return Generator(codec, seed).generate(size)


# -- running it -----------------------------------------------------------------------------------


class Reporter:
    """Progress output; the default says nothing (the end-to-end test runs headless)."""

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        yield

    def note(self, text: str) -> None:
        pass


class ConsoleReporter(Reporter):
    def __init__(self, console: Any) -> None:
        self.console = console
        self.started = time.monotonic()

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        began = time.monotonic()
        self.console.print(f"[bold cyan]▸[/] {title}", highlight=False)
        yield
        self.console.print(f"  [green]✓[/] [dim]{time.monotonic() - began:.1f} s[/]",
                           highlight=False)  # fmt: skip

    def note(self, text: str) -> None:
        self.console.print(f"    {text}", highlight=False)


class LiveRouter:
    """The router in a background thread; ``wait_committed`` follows its consumer group."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.router, self.bus = bootstrap.build_router(settings)
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hub-demo-router", daemon=True)

    def _run(self) -> None:
        try:
            self.router.run(self.bus, self._stop.is_set)
        except BaseException as exc:  # noqa: BLE001 - reported by wait_committed and stop
            self.error = exc
        finally:
            self.bus.close()

    def start(self) -> LiveRouter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        if self.error is not None:
            raise self.error

    def wait_committed(self, ends: Mapping[tuple[str, int], int], timeout: float = 120.0) -> None:
        """Until the router's group has committed every ingest offset in ``ends``."""
        from confluent_kafka import Consumer, TopicPartition

        from hub.adapters.kafka import consumer_config

        prefix = bootstrap.topics(self.settings).prefix
        reader = Consumer(consumer_config(self.settings.bootstrap_servers, f"{prefix}hub-router"))
        wanted = [TopicPartition(t, p) for (t, p), end in sorted(ends.items()) if end > 0]
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.error is not None:
                    raise RuntimeError(f"the router failed: {self.error!r}") from self.error
                if not self.bus.in_transaction:
                    committed = reader.committed(wanted, timeout=10)
                    if all(tp.offset >= ends[(tp.topic, tp.partition)] for tp in committed):
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the router did not commit its input in {timeout:.0f}s")
                time.sleep(0.2)
        finally:
            reader.close()


def _partitions(bootstrap_servers: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """The high watermark of every partition of ``topics`` (absent topics are skipped)."""
    from confluent_kafka import Consumer, TopicPartition

    from hub.adapters.kafka import consumer_config

    reader = Consumer(consumer_config(bootstrap_servers, "hub-demo-watermarks"))
    try:
        metadata = reader.list_topics(timeout=10).topics
        ends: dict[tuple[str, int], int] = {}
        for topic in topics:
            if topic not in metadata:
                continue
            for p in sorted(metadata[topic].partitions):
                ends[(topic, p)] = reader.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=10, cached=False
                )[1]
        return ends
    finally:
        reader.close()


def _read_topic(bootstrap_servers: str, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every committed record of ``topic``, read with read_committed from the beginning."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from hub.adapters.kafka import consumer_config

    ends = {p: end for (_, p), end in _partitions(bootstrap_servers, [topic]).items() if end > 0}
    if not ends:
        return []
    reader = Consumer(consumer_config(bootstrap_servers, "hub-demo-reader"))
    try:
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            positions = reader.position([TopicPartition(topic, p) for p in ends])
            if all(tp.offset >= ends[tp.partition] for tp in positions):
                return out
            out += [m for m in reader.consume(1000, 0.5) if m.error() is None]
        raise TimeoutError(f"could not read {topic} to its end in {timeout:.0f}s")
    finally:
        reader.close()


@dataclass
class AudienceView:
    """What one audience's view holds after the demo."""

    audience: str
    db_url: str
    path: Path | None
    records: int = 0  # records read from deliver.<audience>
    timeline: int = 0
    subjects: int = 0
    consent_based: int = 0
    retractions: dict[str, int] = field(default_factory=dict)  # reason -> count
    corrections: int = 0
    withheld: list[tuple[str, str, int]] = field(default_factory=list)  # field, clause, count
    transformed: list[tuple[str, str, str, int]] = field(default_factory=list)
    clauses: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class DemoResult:
    settings: Settings
    data: DemoData
    router: Any  # RouterStats
    route_seconds: float
    views: dict[str, AudienceView]
    dlq: list[dict[str, str]]
    audit_summary: str
    audit_ok: bool
    audit_size: int
    audit_kinds: dict[str, int]
    seconds: float
    feeds: FeedReport


def publish_and_route(
    settings: Settings, codec: Any, data: DemoData, reporter: Reporter
) -> tuple[Any, float, FeedReport]:
    """Send wave after wave as the partners would: their exports through their connectors, the
    rest through the HTTP ingest API; the router commits each wave before the next is sent (a
    wave's facts are judged on the state the earlier waves built)."""
    from hub.adapters.kafka import SafeProducer, producer_config

    sink = SafeProducer(producer_config(settings.bootstrap_servers, log_level=3))  # errors only
    t = bootstrap.topics(settings)
    live = LiveRouter(settings).start()
    began = time.monotonic()
    try:
        with ingest_server(settings, codec) as (url, tokens):
            reporter.note(f"HTTP ingest API at {url} (one bearer token per agency)")
            mals = MalsDesk(settings, data.mals_clients)
            feeds = PartnerFeeds(settings, sink, url, tokens, mals, data.registers)
            try:
                for number, (title, items) in enumerate(zip(WAVES, data.waves, strict=True),
                                                        start=1):  # fmt: skip
                    wave_began = time.monotonic()
                    lines = feeds.feed(number, items)
                    sink.flush()
                    topics = sorted({t.ingest(item.agency) for item in items})
                    live.wait_committed(_partitions(settings.bootstrap_servers, topics))
                    reporter.note(f"wave {number}/{len(WAVES)}, committed in "
                                  f"{time.monotonic() - wave_began:4.1f} s: {title}")  # fmt: skip
                    for line in lines:
                        reporter.note(f"  {line}")
            finally:
                feeds.close()
    finally:
        live.stop()
    with reporter.step("the MALS sink: referrals the hub delivered to MALS into MALS' database"):
        from connectors.mals.sink import run_sink

        sunk = run_sink(mals.url, settings.bootstrap_servers, settings.registry_url or "",
                        settings.topic_prefix, once=True,
                        fields=bootstrap.field_crypto(settings, codec.catalogue))  # fmt: skip
        feeds.report.mals_sink = dict(sunk.outcomes)
        feeds.report.mals_referrals = mals.referrals()
        mals.close()
        reporter.note(f"{sunk.records} records from deliver.mals: "
                      + ", ".join(f"{k} {n}" for k, n in sorted(sunk.outcomes.items()))
                      + f"; MALS' referrals table now holds {len(feeds.report.mals_referrals)}")
    data.story.remap(feeds.report.id_map)
    stats = live.router.stats
    reporter.note(f"routed {stats.routed:,}: {stats.delivered:,} deliveries, {stats.denied:,} "
                  f"denials, {stats.retracted} retractions, {stats.rejected} to the DLQ")
    return live.router.stats, time.monotonic() - began, feeds.report


def materialise_audit(settings: Settings, timeout: float = 120.0) -> int:
    """Append ``hub.audit`` to the chain until the materialiser has read it to the end."""
    from hub.adapters.audit_consumer import run_materialiser
    from hub.adapters.audit_store import open_audit_store
    from hub.audit.checkpoint import load_signer
    from hub.audit.commands import keys_dir

    topic = bootstrap.topics(settings).audit
    end = _partitions(settings.bootstrap_servers, [topic]).get((topic, 0), 0)
    store = open_audit_store(settings.hub_database_url)
    deadline = time.monotonic() + timeout

    def caught_up() -> bool:
        # the last record of a transactional topic is the commit marker
        done = (store.next_offset(topic, 0) or 0) >= end - 1
        if not done and time.monotonic() > deadline:
            raise TimeoutError(f"the audit materialiser did not reach the end of {topic}")
        return done

    try:
        worker = run_materialiser(
            bootstrap=settings.bootstrap_servers, topic=topic, store=store,
            signer=load_signer(keys_dir(settings.home)), should_stop=caught_up,
        )  # fmt: skip
        return worker.result.appended
    finally:
        store.close()


def view_url(settings: Settings, audience: str) -> str:
    return f"sqlite:///{settings.home / 'views' / (audience + '.db')}"


def fill_views(
    settings: Settings, codec: Any, audiences: Sequence[str], timeout: float = 120.0
) -> dict[str, int]:
    """Run one view consumer per audience (in threads) until each has applied its topic to the
    end; returns the records each read."""
    from hub.adapters.view_consumer import ViewConsumer
    from hub.adapters.view_store import open_view_store

    t = bootstrap.topics(settings)
    ends = _partitions(settings.bootstrap_servers, [t.deliver(a) for a in audiences])
    fields = bootstrap.field_crypto(settings, codec.catalogue)  # opens what each audience may see
    counts: dict[str, int] = {}
    errors: list[BaseException] = []

    def run(audience: str) -> None:
        topic = t.deliver(audience)
        want = {p: end for (name, p), end in ends.items() if name == topic and end > 0}
        store = open_view_store(view_url(settings, audience), audience)
        deadline = time.monotonic() + timeout

        def caught_up() -> bool:
            stored = store.offsets(topic)
            if all(stored.get(p, 0) >= end - 1 for p, end in want.items()):
                return True  # (the last record of each partition is a commit marker)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the view of {audience} did not catch up in {timeout:.0f}s")
            return False

        try:
            consumer = ViewConsumer(bootstrap=settings.bootstrap_servers, topics=t,
                                    audience=audience, store=store, codec=codec,
                                    fields=fields)  # fmt: skip
            counts[audience] = consumer.run(caught_up).records
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)
        finally:
            store.dispose()

    threads = [threading.Thread(target=run, args=(a,), name=f"view-{a}") for a in audiences]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return counts


def describe_view(settings: Settings, audience: str, records: int) -> AudienceView:
    from sqlalchemy import create_engine, text

    url = view_url(settings, audience)
    view = AudienceView(audience, url, Path(url.removeprefix("sqlite:///")), records=records)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            def scalar(sql: str) -> int:
                return int(conn.execute(text(sql)).scalar_one())

            view.timeline = scalar("SELECT count(*) FROM view_timeline")
            view.subjects = scalar("SELECT count(*) FROM view_subjects")
            view.consent_based = scalar("SELECT count(*) FROM view_timeline WHERE consent_based")
            view.corrections = scalar("SELECT count(*) FROM view_corrections")
            view.retractions = dict(conn.execute(text(
                "SELECT reason, count(*) FROM view_retractions GROUP BY reason")).all())
            view.withheld = [tuple(r) for r in conn.execute(text(
                "SELECT field, clause_id, count(*) AS n FROM view_withheld "
                "GROUP BY field, clause_id ORDER BY n DESC, field LIMIT 4")).all()]
            view.clauses = [tuple(r) for r in conn.execute(text(
                "SELECT clause_id, count(*) AS n FROM view_timeline GROUP BY clause_id "
                "ORDER BY n DESC, clause_id LIMIT 4")).all()]
            counted: Counter[tuple[str, str, str]] = Counter()
            for (raw,) in conn.execute(text("SELECT transformed FROM view_timeline")):
                for item in json.loads(raw):
                    counted[(item["field"], item["rule"], item["clause_id"])] += 1
            view.transformed = [(*k, n) for k, n in counted.most_common(3)]
    finally:
        engine.dispose()
    return view


def read_dlq(settings: Settings, codec: Any) -> list[dict[str, str]]:
    """Every record the router rejected, with the reason it wrote in the headers."""
    from hub.domain.errors import SerdeError

    t = bootstrap.topics(settings)
    out = []
    for agency in sorted(SYSTEMS):
        topic = t.dlq(agency)
        for message in _read_topic(settings.bootstrap_servers, topic):
            headers = {k: v.decode(errors="replace") for k, v in message.headers() or ()}
            try:
                _, record = codec.decode(message.value())
                event_type = record["envelope"]["event_type"]
                event_id = record["envelope"]["event_id"]
            except SerdeError:
                event_type, event_id = headers.get("event_type", "?"), "?"
            out.append({"topic": topic, "event_type": event_type, "event_id": event_id,
                        "reason": headers.get("hub.error.reason", "?"),
                        "message": headers.get("hub.error.message", "")})  # fmt: skip
        out.sort(key=lambda d: (d["topic"], d["event_type"], d["message"], d["event_id"]))
    return out


def verify_audit(settings: Settings) -> tuple[str, bool, int, dict[str, int]]:
    """What ``hub audit verify`` says, and the trail's entries by kind."""
    from sqlalchemy import text

    from hub.adapters.audit_store import open_audit_store
    from hub.audit.commands import default_public_key, verify_trail

    store = open_audit_store(settings.hub_database_url)
    try:
        report = verify_trail(store, [default_public_key(settings.home)])
        with store.engine.connect() as conn:
            kinds = dict(conn.execute(text(
                "SELECT kind, count(*) FROM audit_entries GROUP BY kind ORDER BY kind")).all())
    finally:
        store.close()
    return report.summary(), report.first is None, report.size, kinds


def run_demo(
    settings: Settings,
    *,
    size: int = DEFAULT_SIZE,
    seed: int = SEED,
    audiences: Sequence[str] = VIEW_AUDIENCES,
    reporter: Reporter | None = None,
) -> DemoResult:
    """The demo against the broker and registry ``settings`` name, in ``settings.home`` and under
    ``settings.topic_prefix`` (both should be fresh): init, generate, publish and route, audit,
    views, verify. Prints nothing itself; ``reporter`` shows progress. Field encryption is on
    for the run (``HUB_FIELD_ENCRYPTION``): sensitive fields are sealed by every Publisher, sealed
    again per audience by the router, and opened only by the MALS sink and the view consumers."""
    settings = settings.model_copy(update={"field_encryption": True})
    reporter = reporter or Reporter()
    began = time.monotonic()
    with reporter.step("hub init: keys, tables, topics, schemas"):
        init = bootstrap.init(settings)
        reporter.note(f"{init['topics_created']} topics created, {init['schemas']} schemas")
        reporter.note(f"field encryption on: sensitive fields travel sealed (keys in "
                      f"{settings.home / 'keys'})")  # fmt: skip
    codec = bootstrap.codec(settings)
    with reporter.step(f"generating fictional histories (seed {seed})"):
        data = generate(codec, size, seed)
        people = ", ".join(f"{where} {n}" for where, n in data.people.items())
        reporter.note(f"{data.events:,} facts about {sum(data.people.values())} people "
                      f"({people}), each checked as a hub event, then written as its partner "
                      "would export it")  # fmt: skip
    with reporter.step("partners' exports through their connectors, the rest through the HTTP "
                       "ingest API; the router in a thread"):
        stats, route_seconds, feeds = publish_and_route(settings, codec, data, reporter)
    with reporter.step("audit materialiser: hub.audit -> hash chain + signed checkpoints"):
        appended = materialise_audit(settings)
        reporter.note(f"{appended:,} entries appended")
    with reporter.step(f"view consumers: {', '.join(audiences)}"):
        counts = fill_views(settings, codec, audiences)
        views = {a: describe_view(settings, a, counts.get(a, 0)) for a in audiences}
        reporter.note(", ".join(f"{a} {counts.get(a, 0):,}" for a in audiences)
                      + " records applied")  # fmt: skip
    with reporter.step("reading the DLQs and verifying the audit trail"):
        dlq = read_dlq(settings, codec)
        summary, ok, size_, kinds = verify_audit(settings)
    return DemoResult(settings, data, stats, route_seconds, views, dlq, summary, ok, size_, kinds,
                      time.monotonic() - began, feeds)  # fmt: skip


# -- the report -----------------------------------------------------------------------------------


def _timeline_row(view: AudienceView, event_id: str) -> dict[str, Any] | None:
    import sqlite3

    if view.path is None or not view.path.exists():
        return None
    with sqlite3.connect(view.path) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM view_timeline WHERE event_id = ?", (event_id,)).fetchone()
        return dict(row) if row else None


def _query(view: AudienceView, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    import sqlite3

    if view.path is None or not view.path.exists():
        return []
    with sqlite3.connect(view.path) as conn:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]


def _shown_subject(row: Mapping[str, Any]) -> str:
    if row["subject_scheme"] == "hub_pseudonym":
        return f"pseudonym {row['subject_id'][:10]}…"
    return f"{row['subject_scheme']} {row['subject_id']}"


def _address_text(value: Any) -> str:
    if not isinstance(value, Mapping):
        return str(value)
    if value.get("line1"):
        return f"{value['line1']}, {value.get('town') or ''} {value.get('postcode') or ''}".strip()
    return f"area {value.get('area')}" if value.get("area") else "[generalised]"


def _s1_lines(result: DemoResult) -> list[str]:
    story = result.data.story
    lines = [f"[bold]S1[/] release into the Knowsley IOM cohort: {story.s1_name} "
             f"(PNC {story.s1_ids.get('pnc_id')}) leaves HMP Liverpool"]  # fmt: skip
    for audience, view in result.views.items():
        row = _timeline_row(view, story.s1_release)
        if row is None:
            lines.append(f"  {audience:<13} nothing (no clause permits it)")
            continue
        payload = json.loads(row["payload"])
        withheld = [w["field"] for w in json.loads(row["withheld"])]
        address = payload.get("destination_address")
        om = payload.get("offender_manager") or {}
        parts = [f"as {_shown_subject(row)} ({row['clause_id']})"]
        if address:
            parts.append(f"address: {_address_text(address)}")
        if om:
            parts.append(f"OM: {om.get('name') or om.get('organisation')}")
        if len(withheld) > 3:
            parts.append(f"only {', '.join(sorted(payload))}")
        elif withheld:
            parts.append(f"withheld {', '.join(withheld)}")
        lines.append(f"  {audience:<13} " + "; ".join(parts))
    return lines


def _s3_lines(result: DemoResult) -> list[str]:
    story = result.data.story
    lines = [f"[bold]S3[/] MALS referral: the NPS refers {story.s3_name} (MAPPA-managed) to MALS"]
    for audience, view in result.views.items():
        row = _timeline_row(view, story.s3_referral)
        if row is not None:
            withheld = ", ".join(w["field"] for w in json.loads(row["withheld"])) or "nothing"
            lines.append(f"  {audience:<13} {_shown_subject(row)}, clause {row['clause_id']}; "
                         f"withheld: {withheld}")  # fmt: skip
        elif audience in ("mals.mentor", "kmbc", "police.iom"):
            lines.append(f"  {audience:<13} nothing (the referral stays between the NPS and MALS)")
    return lines


def _s7_lines(result: DemoResult) -> list[str]:
    story = result.data.story
    if not story.s7_withdrawal:
        return []
    lines = [f"[bold]S7[/] consent withdrawn: {story.s7_name} withdraws consent to share "
             "progress; the hub retracts what consent-based clauses delivered"]  # fmt: skip
    for audience, view in result.views.items():
        retracted = _query(view, "SELECT count(*) FROM view_retractions WHERE cause_event_id = ?",
                           story.s7_withdrawal)[0][0] if view.path else 0  # fmt: skip
        after = _timeline_row(view, story.s7_after) is not None
        still = sum(_timeline_row(view, e) is not None for e in story.s7_consented)
        if retracted or after or still:
            lines.append(f"  {audience:<13} {retracted} retracted, {still} of the earlier shares "
                         f"still shown; the contact after the withdrawal: "
                         f"{'shown' if after else 'not delivered'}")  # fmt: skip
    return lines


def _s8_lines(result: DemoResult) -> list[str]:
    story = result.data.story
    wrong, right = story.s8_dates
    lines = [f"[bold]S8[/] corrected release date: HMP Liverpool keyed {wrong} for "
             f"{story.s8_name}, then corrected it to {right} (supersedes_event_id)"]  # fmt: skip
    for audience, view in result.views.items():
        corrected = _query(view, "SELECT correction_reason FROM view_corrections WHERE "
                                 "superseded_event_id = ?", story.s8_original)  # fmt: skip
        row = _timeline_row(view, story.s8_correction)
        if corrected or row:
            shown = json.loads(row["payload"]).get("release_date") if row else "-"
            lines.append(f"  {audience:<13} shows release date {shown}; the original is a "
                         f"tombstone ({corrected[0][0] if corrected else '?'})")  # fmt: skip
    return lines


def _seen_by(result: DemoResult, event_ids: Sequence[str]) -> str:
    seen = [a for a, v in result.views.items() if any(_timeline_row(v, e) for e in event_ids)]
    return ", ".join(seen) or "no audience"


def _more_lines(result: DemoResult) -> list[str]:
    """S4, S5, S6, S9 and S12 in a line or two each."""
    story, feeds = result.data.story, result.feeds
    lines = []
    if story.s2_nominated:
        lines.append(f"[bold]S2[/] LCP in HMP Liverpool: {len(story.s2_nominated)} nominations "
                     f"from wing G (seen by {_seen_by(result, story.s2_nominated)}); "
                     f"{len(story.s2_completed)} graduates, attendance kept in MALS' database "
                     f"(completion seen by {_seen_by(result, story.s2_completed)}; the "
                     "facilitators' notes never leave MALS)")  # fmt: skip
    contacts = {a: _query(v, "SELECT count(*) FROM view_timeline WHERE event_type = "
                             "'mentoring.contact'")[0][0] for a, v in result.views.items()}
    lines.append("[bold]S4[/] mentoring recorded once, in MALS' own database: "
                 f"{feeds.mals_source[1]} staff entries published by the MALS source; contacts "
                 f"shown: " + ", ".join(f"{a} {n}" for a, n in contacts.items() if n)
                 + " (no notes leave MALS)")  # fmt: skip
    if story.s5_events:
        *facts, recalled = story.s5_events
        lines.append(f"[bold]S5[/] breach and recall: {story.s5_name}, arrested in his "
                     "exclusion zone (CORVUS), breach recorded by the NPS (case-system export), "
                     f"arrested again, recalled: seen by {_seen_by(result, facts)}; the recall "
                     f"by {_seen_by(result, [recalled])} (MALS: in custody, nothing more)")
    if story.s6_events:
        seen = _seen_by(result, story.s6_events)
        lines.append(f"[bold]S6[/] {story.s6_name} moves to Liverpool, then Salford, and leaves "
                     f"the Knowsley IOM cohort (CORVUS): seen by {seen}")
    lines.append(_held_at_home(
        result, "[bold]S9[/] Safety House cases, plans and the Mayor's orders (Dutch export)",
        ("safety_house", "hague_municipality"), NL_AUDIENCES, "UK or IT",
    ))  # fmt: skip
    if story.s10_events:
        _, _, order, extension, _ = story.s10_events
        lines.append("[bold]S10[/] Mr X's early release: pre-release and long-term plans with a "
                     "task per partner, the Mayor's spatial restraining order and its extension "
                     f"(seen by {_seen_by(result, [order, extension])}; boundaries and the "
                     "protected family at the police only)")  # fmt: skip
    if story.s11_events:
        lines.append("[bold]S11[/] the Hague Aftercare Team's prison visit (five areas), support "
                     "after release and housing-route application, through the hague-aftercare "
                     f"connector: seen by {_seen_by(result, story.s11_events)} of these views "
                     "(benefit and debt detail never at the police)")  # fmt: skip
    lines.append(_held_at_home(
        result, "[bold]S12[/] ERI's register (Italian CSV)",
        ("eri", "it_social_services", "uepe"), IT_AUDIENCES, "UK or NL",
    ))  # fmt: skip
    return lines


def _held_at_home(
    result: DemoResult, label: str, sources: Sequence[str], home: Sequence[str], others: str
) -> str:
    """How many records of ``sources`` each view holds, and whether any view outside the
    sources' jurisdiction (``home`` lists its audiences) holds one."""
    marks = ", ".join("?" * len(sources))
    held = {a: _query(v, f"SELECT count(*) FROM view_timeline WHERE source_agency IN ({marks})",
                      *sources)[0][0]
            for a, v in result.views.items()}  # fmt: skip
    return (f"{label}: " + ", ".join(f"{a} {n}" for a, n in held.items() if n) + " records"
            + ("" if any(held[a] for a in held if a not in home) else
               f"; no {others} audience holds any"))  # fmt: skip


def _s19_lines(result: DemoResult) -> list[str]:
    story = result.data.story
    rejected = [d for d in result.dlq if d["event_id"] in story.s19_rejected]
    leaked = [a for a, v in result.views.items()
              for case in story.s19_case_ids
              if _query(v, "SELECT count(*) FROM view_timeline WHERE payload LIKE ?",
                        f"%{case}%")[0][0]]  # fmt: skip
    return [f"[bold]S19[/] restricted programme: {len(rejected)} of {len(story.s19_rejected)} "
            "Safety House records of the NL extremism programme went to the DLQ; "
            f"{'found in ' + ', '.join(leaked) if leaked else 'in no view'}"]  # fmt: skip


def print_report(console: Any, result: DemoResult, *, broker: str, home: Path,
                 stop_hint: str | None) -> None:  # fmt: skip
    from rich.table import Table

    s, stats = result.settings, result.router
    console.print()
    console.print(
        f"[bold]Router[/]: {stats.received:,} events in, {stats.delivered:,} deliveries, "
        f"{stats.denied:,} denials, {stats.retracted:,} retractions, {stats.rejected:,} to the "
        f"DLQ, {stats.aborted} aborted batches ({stats.batches:,} transactions, "
        f"{result.route_seconds:.1f} s with the waits between waves)", highlight=False,
    )  # fmt: skip

    feeds = result.feeds
    console.print()
    console.print(f"[bold]Partner connectors[/] (exports under {s.home / 'partners'}; "
                  "rejected rows in its quarantine/ folder, one JSON line each with file, line "
                  "and reasons)", highlight=False)  # fmt: skip
    for name, summary in feeds.summaries.items():
        console.print(f"  {name:<18} read {summary.read}, published {summary.published}, "
                      f"rejected {summary.rejected}, skipped {summary.skipped}; "
                      f"{summary.events} events ({summary.corrections} corrections)",
                      highlight=False)  # fmt: skip
    rows, sent, failed = feeds.mals_source
    console.print(f"  {'mals-source':<18} MALS' database: {rows} outbox rows from staff entries, "
                  f"{sent} published, {failed} failed (reason in hub_outbox.error)",
                  highlight=False)  # fmt: skip
    sunk = ", ".join(f"{k} {n}" for k, n in sorted(feeds.mals_sink.items()))
    console.print(f"  {'mals-sink':<18} deliver.mals into MALS' database: {sunk}; its referrals "
                  f"table holds {len(feeds.mals_referrals)} referrals, none re-keyed by hand",
                  highlight=False)  # fmt: skip
    posted = ", ".join(f"{a} {n}" for a, n in sorted(feeds.posted.items()))
    console.print(f"  {'HTTP ingest':<18} {sum(feeds.posted.values())} documents in "
                  f"{feeds.requests} requests: {posted}", highlight=False)  # fmt: skip

    console.print()
    table = Table(title="What each audience's view holds", title_justify="left")
    for column in ("audience", "read", "timeline", "subjects", "consent", "retracted",
                   "corrected"):
        table.add_column(column, justify="left" if column == "audience" else "right")
    for audience, v in result.views.items():
        table.add_row(audience, f"{v.records:,}", f"{v.timeline:,}", f"{v.subjects:,}",
                      f"{v.consent_based:,}", str(sum(v.retractions.values())),
                      str(v.corrections))  # fmt: skip
    console.print(table)
    console.print("  [dim]read: records consumed from deliver.<audience>; timeline: events "
                  "shown; consent: rows under consent-based clauses[/]")  # fmt: skip

    console.print()
    console.print("[bold]Per audience[/]: the clauses that delivered most, the fields withheld "
                  "most often (×times, by the clause of the delivery), transformations")
    for audience, v in result.views.items():
        console.print(f"  [bold]{audience}[/]", highlight=False)
        clauses = ", ".join(f"{c} ×{n:,}" for c, n in v.clauses[:4])
        console.print(f"    clauses      {clauses or '-'}", highlight=False)
        withheld = ", ".join(f"{f} ×{n:,} ({c})" for f, c, n in v.withheld) or "nothing"
        console.print(f"    withheld     {withheld}", highlight=False)
        if v.transformed:
            changed = ", ".join(f"{f} {r} ×{n:,} ({c})" for f, r, c, n in v.transformed)
            console.print(f"    transformed  {changed}", highlight=False)
        if v.retractions:
            gone = ", ".join(f"{r} ×{n}" for r, n in v.retractions.items())
            console.print(f"    retracted    {gone}", highlight=False)

    console.print()
    console.print("[bold]Storylines[/]")
    for line in (*_s1_lines(result), *_s3_lines(result), *_s7_lines(result), *_s8_lines(result),
                 *_more_lines(result), *_s19_lines(result)):  # fmt: skip
        console.print(line, highlight=False)

    console.print()
    console.print(f"[bold]DLQ[/]: {len(result.dlq)} records rejected by the router, with the "
                  "reason in their headers")  # fmt: skip
    for d in result.dlq:
        console.print(f"  {d['topic'].removeprefix(s.topic_prefix)}  {d['event_type']}  "
                      f"[bold]{d['reason']}[/]: {d['message']}", highlight=False)  # fmt: skip

    colour = "green" if result.audit_ok else "red"
    kinds = ", ".join(f"{k} {n:,}" for k, n in result.audit_kinds.items())
    console.print(f"[bold]hub audit verify[/]: [{colour}]{result.audit_summary}[/]",
                  highlight=False)
    console.print(f"  entries by kind: {kinds}", highlight=False)

    views = s.home / "views"
    console.print()
    console.print("[bold]Where things are[/]", highlight=False)
    for label, value in (
        ("broker", broker),
        ("HUB_HOME", str(home)),
        ("this run", f"{s.home}   (topic prefix {s.topic_prefix})"),
        ("hub database", f"{s.home / 'hub.db'}   (policy state, schemas, the audit trail)"),
        ("audit keys", str(s.home / "keys")),
        ("views", f"{views}/<audience>.db   (SQLite, one per audience)"),
    ):
        console.print(f"  {label:<13} {value}", highlight=False)
    console.print("[bold]Explore[/]", highlight=False)
    for command in (
        "hub policy matrix                      # who may see what, from the agreements",
        f"HUB_HOME={s.home} hub audit verify",
        f'sqlite3 {views}/kmbc.db "SELECT field, clause_id, count(*) FROM view_withheld '
        'GROUP BY 1, 2 ORDER BY 3 DESC"',
        f'sqlite3 {views}/mals.mentor.db "SELECT event_type, payload FROM view_timeline LIMIT 5"',
        f'sqlite3 {views}/police.iom.db "SELECT * FROM view_retractions"',
        f'sqlite3 {s.home}/hub.db "SELECT kind, outcome, count(*) FROM audit_entries '
        'GROUP BY 1, 2"',
    ):
        console.print(f"  {command}", highlight=False, soft_wrap=True)
    if stop_hint:
        console.print(f"[bold]The broker keeps running[/]; stop it with [bold]{stop_hint}[/]",
                      highlight=False)  # fmt: skip
    console.print(f"[dim]demo finished in {result.seconds:.0f} s (after the broker was up)[/]")


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    audience: str
    role: str
    who: str
    mentor_id: str | None = None


def demo_users(story: Storylines) -> list[DemoUser]:
    """One sign-in per kind of reader (``hub web add-user`` for each); demo passwords only."""
    return [
        DemoUser("iom.officer", "demo-iom-officer", "police.iom", "practitioner",
                 "a Merseyside Police IOM officer"),
        DemoUser("kmbc.coordinator", "demo-kmbc-coordinator", "kmbc", "practitioner",
                 "KMBC's IOM co-ordinator"),
        DemoUser("mals.coordinator", "demo-mals-coordinator", "mals", "practitioner",
                 "a MALS coordinator"),
        DemoUser("mals.mentor", "demo-mals-mentor", "mals.mentor", "mentor",
                 f"a MALS volunteer mentor ({story.s1_mentor}, {story.s1_name}'s)",
                 story.s1_mentor or "MENTOR-01"),
        DemoUser("sh.processmanager", "demo-safety-house", "safety_house", "practitioner",
                 "a Safety House process manager (The Hague)"),
        DemoUser("nl.police", "demo-hague-police", "nl_police", "practitioner",
                 "a Hague police officer at the Safety House"),
        DemoUser("eri.coordinator", "demo-eri-coordinator", "eri", "practitioner",
                 "an ERI coordinator (Turin)"),
        DemoUser("auditor", "demo-hub-auditor", "hub", "auditor", "the hub's auditor"),
    ]  # fmt: skip


def create_demo_users(settings: Settings, story: Storylines) -> list[DemoUser]:
    """The demo's portal users in ``HUB_HOME/web/users.db`` of the run."""
    from hub.web import WebConfig
    from hub.web.users import open_user_store

    config = WebConfig.from_settings(settings)
    (settings.home / "web").mkdir(parents=True, exist_ok=True)
    store = open_user_store(config.users_url)
    users = demo_users(story)
    for u in users:
        store.add(u.username, u.audience, u.role, u.password, u.mentor_id)
    return users


def serve_portal(console: Any, settings: Settings, story: Storylines, port: int) -> None:
    """``hub web serve`` in this process until Ctrl-C, with the demo's sign-ins printed."""
    import uvicorn

    from hub.web import WebConfig, create_app

    users = create_demo_users(settings, story)
    console.print()
    console.print(f"[bold]The portal[/]: http://127.0.0.1:{port}/  (Ctrl-C stops it; the views "
                  "stay under the run directory)", highlight=False)  # fmt: skip
    for u in users:
        console.print(f"  {u.username:<18} password {u.password:<22} {u.who} ({u.audience})",
                      highlight=False)  # fmt: skip
    config = WebConfig.from_settings(settings)
    uvicorn.run(create_app(config), host="127.0.0.1", port=port, server_header=False,
                log_config=None, access_log=False)  # fmt: skip


def main(size: int = DEFAULT_SIZE, seed: int = SEED, serve: bool = True, port: int = 8080) -> int:
    """``hub demo``: returns the exit code (3 when the audit trail does not verify). With
    ``serve``, the portal then runs on ``port`` until Ctrl-C."""
    import os
    from contextlib import ExitStack

    from rich.console import Console

    from hub import logsetup
    from hub.adapters import broker as local
    from hub.adapters.registry_server import running_registry
    from hub.domain.errors import InfraError

    console = Console()
    base = bootstrap.settings()
    if "HUB_LOG_LEVEL" not in os.environ:
        logsetup.configure("ERROR")  # the demo prints its own story; logs would drown it
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_home = base.home / "demo" / stamp
    n = 1
    while run_home.exists():
        n += 1
        run_home = base.home / "demo" / f"{stamp}-{n}"
    prefix = f"{base.topic_prefix}demo-{run_home.name}."
    reporter = ConsoleReporter(console)
    console.print(f"[bold]The hub: a demo on fictional data[/] (seed {seed}, {size} people in "
                  f"Knowsley and a quarter as many each in The Hague and Turin)")  # fmt: skip
    with ExitStack() as stack:
        with reporter.step("Kafka broker"):
            if base.kafka_bootstrap:
                if not local.answers_metadata(base.kafka_bootstrap, timeout=10):
                    raise InfraError(f"HUB_KAFKA_BOOTSTRAP={base.kafka_bootstrap} does not answer")
                where, stop_hint = f"{base.kafka_bootstrap} (HUB_KAFKA_BOOTSTRAP)", None
            else:
                status = local.LocalBroker(base).start()
                where, stop_hint = f"{status.describe()} [plaintext: development mode]", (
                    "hub broker stop")
            reporter.note(where)
        run_home.mkdir(parents=True)
        settings = base.model_copy(update={
            "home": run_home, "kafka_bootstrap": base.bootstrap_servers, "database_url": None,
            "topic_prefix": prefix})  # fmt: skip
        with reporter.step("schema registry (in this process, on a free port)"):
            url = stack.enter_context(running_registry(settings.hub_database_url))
            settings = settings.model_copy(update={"registry_url": url})
            reporter.note(f"{url}, schemas stored in {settings.hub_database_url}")
        reporter.note(f"this run: {run_home}, topic prefix {prefix}")
        result = run_demo(settings, size=size, seed=seed, reporter=reporter)
        print_report(console, result, broker=where, home=base.home, stop_hint=stop_hint)
        if serve and result.audit_ok:
            try:
                serve_portal(console, result.settings, result.data.story, port)
            except KeyboardInterrupt:
                pass
    return 0 if result.audit_ok else 3
