"""The keeper: applies retention per resolution to Turok's DynamoDB day tables.

``plan.py`` computes, from table names and the carbon schemas alone, which day tables are past
the retention of their resolution (to delete) and which of today's and the coming days' tables
are missing (to create); ``apply.py`` lists the tables, applies a plan with a guard that refuses
to delete a table still holding data inside retention, and removes from the S3 index the names
left with no data; ``cli.py`` is the ``turok-keeper`` command. ``templates/`` holds schedules
that run it (AWS Data Pipeline, EventBridge Scheduler, cron, systemd).
"""
