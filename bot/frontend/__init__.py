"""The Discord front end: a ``commands.Bot`` subclass, cogs and views, all thin adapters.

- ``client``: ``CrowdcutBot``, wired once with the services.
- ``runner``: ``crowdcut run`` / ``crowdcut sync-commands`` entry points.
- ``publisher``: status messages and clip posts (the worker's events, in Discord).
- ``render``: how jobs, clips and projects look in messages and embeds.
- ``checks``: who is a moderator; the one error handler.
- ``views``: persistent buttons (pre-moderation, cut approval).
- ``cogs/``: one cog per feature: prompting, voting, projects, cuts, admin.
"""
