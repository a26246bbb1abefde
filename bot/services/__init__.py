"""Services: where the pure core meets storage, media and the generator.

- ``submissions``: a prompt enters here and becomes a queued job.
- ``worker``: jobs wait in the database and are generated here, fairly.
- ``voting``: reactions become votes.
- ``cuts``: winners are chosen and the video is cut.
- ``projects``: projects open, close and get their song.
- ``members``: forget-me.

Each service takes the shared objects (``App``) in its constructor; the Discord
front end and the CLI call these and nothing below them.
"""
