"""Audience views: the pure projection of delivered events into an audience's tables
(:mod:`hub.views.projection`), the status fold (:mod:`hub.views.status`), sample deliveries and
the view benchmark. The SQL store and the Kafka loop live in ``hub.adapters.view_store`` and
``hub.adapters.view_consumer``."""
