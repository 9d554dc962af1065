"""Clients of the services the worker talks to: transport only.

Each speaks one service's API (requests, credentials, limits, the shape of its answers) and hands
back what the service said. What an answer means for a row (sent, retried, failed, deferred) is
decided by the step that uses the client (:mod:`worker.steps`).
"""
