"""The Turok gateway: Carbon and StatsD receivers feeding turok-lib's windows, flushing to SQS."""
