from turok_core.runtime.aws import make_client
from turok_core.runtime.provision import provision


def test_provision_is_idempotent_and_wires_the_dead_letter_queue(turok_config):
    provision(turok_config)  # a second run changes nothing and does not fail
    sqs = make_client("sqs", turok_config)
    url = sqs.get_queue_url(QueueName=turok_config.queue_name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert turok_config.dead_letter_queue_name in attrs["RedrivePolicy"]
    assert attrs["MaximumMessageSize"] == str(turok_config.sqs_max_message_bytes)
    make_client("s3", turok_config).head_bucket(Bucket=turok_config.index_bucket)


def test_provision_again_applies_changed_queue_settings(turok_config):
    changed = turok_config.replace(visibility_timeout_seconds=7, dead_letter_max_receives=3)
    provision(changed)
    sqs = make_client("sqs", changed)
    url = sqs.get_queue_url(QueueName=changed.queue_name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "7"
    assert '"maxReceiveCount": "3"' in attrs["RedrivePolicy"] or '"maxReceiveCount": 3' in attrs["RedrivePolicy"]


def test_provision_makes_each_partition_queue_with_its_dead_letter_queue_and_the_lease_table(turok_config):
    from turok_core.wire.partitions import partition_dead_letter_queue_name, partition_queue_names

    config = turok_config.replace(queue_partitions=3)
    provision(config)
    sqs = make_client("sqs", config)
    names = partition_queue_names(config)
    assert names == [f"{config.queue_name}-{p}" for p in range(3)]
    for partition, name in enumerate(names):
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        redrive = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]["RedrivePolicy"]
        assert partition_dead_letter_queue_name(config, partition) + '"' in redrive
    table = make_client("dynamodb", config).describe_table(TableName=config.lease_table_name)["Table"]
    assert table["TableName"] == f"{config.table_prefix}{config.table_joiner}leases"
    assert table["KeySchema"] == [{"AttributeName": "lease", "KeyType": "HASH"}]
