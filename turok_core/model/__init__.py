"""What every stage shares: configuration, carbon's schema files, the Turok message, aggregation
types, resolutions, the wire form of times, and the metric-name rule. Depends on nothing else."""
