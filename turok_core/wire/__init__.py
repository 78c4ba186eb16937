"""What crosses between the services: the SQS envelope of Turok messages (codec), SQS access
(queues), the index queue's announcements and the cache-query protocol the finder speaks."""
