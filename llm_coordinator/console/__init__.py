"""The web console of Atelier: plant now, plans and approvals, the operator's page, work orders.

:func:`~llm_coordinator.console.app.create_app` builds the app over a
:class:`~llm_coordinator.console.services.ConsoleBackend` and a
:class:`~llm_coordinator.console.auth.UserStore`; :mod:`llm_coordinator.console.wiring` builds
those for ``atelier console`` (the twin, the coordinator's store, the robots' e-stop latch).
"""
