"""One cog per user-facing feature."""
