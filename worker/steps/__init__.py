"""The steps of a pass, each in its module: events (calendar and planning), push, receipts.

A step claims rows through the gateway, decides with the planner and the service clients, and
writes each outcome back guarded by its claim. Steps share only :mod:`worker.steps.context`; the
pass (:mod:`worker.passes`) runs them in order and no step imports the pass.
"""
