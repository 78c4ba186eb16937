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
