"""The stream worker: joins the system's audit events to injections and publishes verdicts.

- ``watch``: one expectation of one injection, and the pure decisions on it.
- ``app``: the faust app that routes chaos events, audit events and ticks to the judge.
- ``recovery``: the watchdog that un-sticks faust's table recovery.
"""
