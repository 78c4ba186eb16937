"""The keeper: applies retention per resolution to the day tables (see its own issue)."""
