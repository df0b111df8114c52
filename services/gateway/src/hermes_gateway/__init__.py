"""Hermes gateway: the HTTP API (``/api/...``), the live SSE view of a thread, ``/metrics`` and the web UI.

It publishes commands (``SubmitIdea``, ``AnswerQuestions``) and reads state through the orchestrator's
``hermes.query.*`` request/reply subjects; it owns no state of its own.
"""
