"""Small on-demand DynamoDB tables keyed by one string attribute (the lease table, the schema
record): created once, by whichever process comes first, and waited for until ACTIVE."""
from __future__ import annotations

from typing import Callable

from botocore.exceptions import ClientError

from turok_core.runtime.aws import AwsClient
from turok_core.runtime.retry import error_code

TABLE_WAIT_POLLS = 120  # DescribeTable polls while a new table is CREATING
TABLE_WAIT_INTERVAL = 0.5


def ensure_key_table(client: AwsClient, name: str, key: str, sleep: Callable[[float], None]) -> bool:
    """Create table ``name`` (hash key ``key``, a string) unless it exists, and wait until it is
    ACTIVE; True when this call created it. A table made meanwhile by a racing process is fine."""
    created = False
    for _ in range(TABLE_WAIT_POLLS):
        try:
            status = client.describe_table(TableName=name)["Table"]["TableStatus"]
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            status = None
        if status == "ACTIVE":
            return created
        if status is None:
            try:
                made = client.create_table(
                    TableName=name, BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}])
                created = True
                if made.get("TableDescription", {}).get("TableStatus") == "ACTIVE":
                    return created  # ACTIVE at once (moto): no wait
            except ClientError as exc:
                if error_code(exc) != "ResourceInUseException":
                    raise
        sleep(TABLE_WAIT_INTERVAL)
    raise RuntimeError(f"table {name} did not become ACTIVE")
