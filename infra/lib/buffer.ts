// The buffer between the API and Kafka: an SQS queue with its dead-letter queue, or a Kinesis
// stream whose on-failure destination is that same queue; and the bucket for dead letters too large
// for the DLQ.

import * as cdk from 'aws-cdk-lib';
import * as kinesis from 'aws-cdk-lib/aws-kinesis';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { BufferKind, Settings, streamRetentionHours } from './settings';

export interface Buffer {
  readonly kind: BufferKind;
  readonly queue?: sqs.Queue;
  readonly stream?: kinesis.Stream;
  readonly deadLetters: sqs.Queue;
  readonly deadLetterObjects: s3.Bucket;
}

/** How long the DLQ keeps a letter (SQS's most). */
const DLQ_RETENTION_DAYS = 14;
/** The buffer queue's retention. */
const SQS_RETENTION_DAYS = 4;

/** The buffer of `s.buffer`, the DLQ and the dead-letter bucket. */
export function addBuffer(stack: cdk.Stack, s: Settings): Buffer {
  const deadLetters = new sqs.Queue(stack, 'DeadLetters', {
    encryption: sqs.QueueEncryption.SQS_MANAGED,
    enforceSSL: true,
    retentionPeriod: cdk.Duration.days(DLQ_RETENTION_DAYS),
  });
  // Dead letters too large for the DLQ (over 256 KiB with their attributes): the drain keeps
  // them here and the DLQ gets a claim check naming the object; replay reads them back and
  // removes the object. Objects outlive the longest a letter can stay in the DLQ.
  const deadLetterObjects = new s3.Bucket(stack, 'DeadLetterObjects', {
    encryption: s3.BucketEncryption.S3_MANAGED,
    enforceSSL: true,
    blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
    objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
    lifecycleRules: [
      {
        prefix: 'dead-letters/',
        expiration: cdk.Duration.days(DLQ_RETENTION_DAYS + 1),
        abortIncompleteMultipartUploadAfter: cdk.Duration.days(1),
      },
      {
        // Values too large for the buffer (claim checks) and the drain's delivered markers: kept
        // as long as a copy of their message can exist — in the buffer, then dead-lettered in
        // the DLQ — and a day more.
        prefix: 'claims/',
        expiration: cdk.Duration.days(claimRetentionDays(s)),
        abortIncompleteMultipartUploadAfter: cdk.Duration.days(1),
      },
    ],
    removalPolicy: cdk.RemovalPolicy.RETAIN,
  });
  if (s.buffer === 'sqs') {
    const queue = new sqs.Queue(stack, 'Buffer', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      // AWS: at least 6 × the function timeout for queues Lambda drains.
      visibilityTimeout: cdk.Duration.seconds(6 * s.drainTimeoutSecs),
      retentionPeriod: cdk.Duration.days(SQS_RETENTION_DAYS),
      deadLetterQueue: { queue: deadLetters, maxReceiveCount: s.maxReceiveCount },
    });
    return { kind: 'sqs', queue, deadLetters, deadLetterObjects };
  }
  const stream = new kinesis.Stream(stack, 'Buffer', {
    shardCount: s.kinesisShards,
    // Records the drain gives up on stay long enough to replay their on-failure pointers.
    retentionPeriod: cdk.Duration.hours(streamRetentionHours(s)),
    encryption: kinesis.StreamEncryption.MANAGED,
  });
  return { kind: 'kinesis', stream, deadLetters, deadLetterObjects };
}

/** Days a claim-checked value is kept: the buffer's retention, then the DLQ's, and a day. */
export function claimRetentionDays(s: Settings): number {
  const bufferDays = s.buffer === 'sqs' ? SQS_RETENTION_DAYS : Math.ceil(streamRetentionHours(s) / 24);
  return bufferDays + DLQ_RETENTION_DAYS + 1;
}
