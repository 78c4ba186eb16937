"""What crosses between the services: the SQS envelope of Turok messages (codec) and the
grouped windows it encodes (groups), SQS access (queues) and its in-memory stand-in
(memory_queue), the index queue's announcements and the cache-query protocol the finder speaks.
No module here imports a producer's or a consumer's types."""
