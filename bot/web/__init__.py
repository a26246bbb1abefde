"""The project pages: each project's video, credits, storyboard and live standings on the web.

An aiohttp application served from the bot's process (``crowdcut run``) or alone
(``crowdcut web``), reading the same database (read-only) and media store:

- ``reader``   the database, read-only, off the event loop (one connection per thread)
- ``pages``    what a page shows, built from the rows (pure: no HTTP, no HTML)
- ``html``     the templates: plain server-rendered HTML, every value escaped
- ``media``    files from the content-addressed store: ETag, Range, immutable caching
- ``live``     the per-project standings stream (server-sent events), one poller each
- ``app``      the routes; ``server`` starts and stops them
- ``links``    the addresses the bot links to (``PUBLIC_URL``), ``/project link`` and
  ``/project listing``
"""
