"""The policy layer: information-sharing agreements as code.

- :func:`load_agreements` reads ``policies/`` (the agency registry and one file per agreement)
  into an :class:`AgreementSet`, refusing anything it does not understand.
- :func:`evaluate` decides, per event and audience, whether and under which clause the audience
  may receive the event, and how each field is treated (:class:`Decision`). Default deny.
- :func:`apply` builds the record the audience receives: same schema, withheld fields null,
  transformed fields, the subject under the audience's own id or pseudonym, and a ``disclosure``.
- :class:`PolicyState` is the state the conditions read (consent, cohort, referrals,
  supervision, identity links, deliveries), kept up to date from events; :class:`MemoryState`
  is the in-memory backend, ``hub.adapters.policy_store.SqlPolicyState`` the database one.
"""

from hub.policy.agreements import AgreementSet
from hub.policy.engine import DENY, PERMIT, REJECT, Decision, evaluate
from hub.policy.loader import collect, load_agreements
from hub.policy.model import Agency, Agreement, Clause, Conditions, Retention, SummarySpec
from hub.policy.state import STATE_EVENT_TYPES, MemoryState, PolicyState, StateLogic
from hub.policy.transform import PSEUDONYM_SCHEME, PseudonymKeys, apply

__all__ = [
    "DENY",
    "PERMIT",
    "PSEUDONYM_SCHEME",
    "REJECT",
    "STATE_EVENT_TYPES",
    "Agency",
    "Agreement",
    "AgreementSet",
    "Clause",
    "Conditions",
    "Decision",
    "MemoryState",
    "PolicyState",
    "PseudonymKeys",
    "Retention",
    "StateLogic",
    "SummarySpec",
    "apply",
    "collect",
    "evaluate",
    "load_agreements",
]
