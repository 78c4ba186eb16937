"""What the daemons share at run time: boto3 clients, the AWS thread pool, the SQS consumer loop,
self-metrics, the cache-query server, log rate limits and provisioning. The only part of
turok_core besides the ``service.py`` shells that may use Twisted."""
