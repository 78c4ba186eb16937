"""DynamoDB: day-table names, how slots are laid out in blocks, batched writes and merges,
batched reads, and series read back the way graphite sees them."""
