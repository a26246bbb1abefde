"""The pure core of crowdcut: rules with no I/O and no ``discord`` import.

- ``prompts``: prompt validation and cleaning.
- ``queue``: fair round-robin order, concurrency limits, retry backoff, ETA.
- ``voting``: which reactions count and how clips are scored.
- ``slots``: slot plans that split a song into slots.
- ``cut``: which clip stands in which slot.
- ``projects``: the project state machine.
"""
