"""Creates the default resources of the local stack; safe to run again.

Run by local/up with the moto virtualenv's Python (boto3 comes with moto). Prints one
`KEY=value` line per resource for local/up to turn into exports.
"""

import os
import sys
import time

import boto3
from botocore.config import Config

region = os.environ["REGION"]
sqs_endpoint = os.environ["SQS_ENDPOINT"]
aws_endpoint = os.environ["AWS_ENDPOINT"]
max_receive = os.environ["MAX_RECEIVE_COUNT"]
common = dict(region_name=region, aws_access_key_id="test", aws_secret_access_key="test",
              config=Config(retries={"max_attempts": 2}))
sqs = boto3.client("sqs", endpoint_url=sqs_endpoint, **common)
kinesis = boto3.client("kinesis", endpoint_url=os.environ["KINESIS_ENDPOINT"], **common)
s3 = boto3.client("s3", endpoint_url=aws_endpoint, **common)


def queue_pair(name, dlq_name, fifo):
    extra = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if fifo else {}
    # The limit the API enforces must be the queue's own: state it rather than rely on a default.
    base = {"MaximumMessageSize": "262144", "VisibilityTimeout": "180", **extra}
    dlq_url = sqs.create_queue(QueueName=dlq_name, Attributes={**base, "MessageRetentionPeriod": "1209600"})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = '{"deadLetterTargetArn":"%s","maxReceiveCount":"%s"}' % (dlq_arn, max_receive)
    url = sqs.create_queue(QueueName=name, Attributes=base)["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": redrive})
    return url, dlq_url


def stream(name):
    try:
        kinesis.create_stream(StreamName=name, ShardCount=2)
    except kinesis.exceptions.ResourceInUseException:
        pass
    for _ in range(100):
        if kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.1)
    sys.exit(f"kinesis stream {name} did not become ACTIVE")


queue_url, dlq_url = queue_pair(os.environ["QUEUE_NAME"], os.environ["DLQ_NAME"], fifo=False)
fifo_url, fifo_dlq_url = queue_pair(os.environ["FIFO_QUEUE_NAME"], os.environ["FIFO_DLQ_NAME"], fifo=True)
stream(os.environ["STREAM_NAME"])
# Dead letters too large for the DLQ (claim checks); creating it again is a no-op in us-east-1.
s3.create_bucket(Bucket="spillway-dead-letters")
print(f"SPILLWAY_SQS_QUEUE_URL={queue_url}")
print(f"SPILLWAY_SQS_DLQ_URL={dlq_url}")
print(f"SPILLWAY_SQS_FIFO_QUEUE_URL={fifo_url}")
print(f"SPILLWAY_SQS_FIFO_DLQ_URL={fifo_dlq_url}")
print(f"SPILLWAY_KINESIS_STREAM={os.environ['STREAM_NAME']}")
# The drain's own names for its dead letters, so that `cargo run -p buffer-drain` dead-letters
# poison to the local DLQ (and its S3 bucket) as the deployed drain does.
print(f"SPILLWAY_DLQ_URL={dlq_url}")
print("SPILLWAY_DLQ_BUCKET=spillway-dead-letters")
