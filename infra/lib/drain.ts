// The drain: buffer-drain, fed by an event source mapping on the queue or stream, producing to MSK
// at a bounded connection rate and reporting partial-batch failures; poison records go to the DLQ
// (and, too large for it, to the dead-letter bucket).

import * as cdk from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sources from 'aws-cdk-lib/aws-lambda-event-sources';
import { Buffer } from './buffer';
import { rustFunction } from './functions';
import { Cluster, Topic } from './kafka';
import { Network } from './network';
import { Settings } from './settings';

/** The drain function and its event source mapping's id (its metrics' dimension). */
export interface Drain {
  readonly fn: lambda.Function;
  readonly mappingId: string;
}

/** The drain function, its Kafka and dead-letter permissions, and its event source on the buffer. */
export function addDrain(
  stack: cdk.Stack,
  s: Settings,
  network: Network,
  cluster: Cluster,
  topic: Topic,
  buffer: Buffer,
): Drain {
  // On a capacity provider the function runs in the provider's network, not in one of its own.
  const fn = rustFunction(stack, s, 'Drain', 'buffer-drain', s.drainCapacityProvider ? undefined : network, {
    description: 'spillway: buffer → MSK, rate-limited, partial-batch failures',
    timeout: cdk.Duration.seconds(s.drainTimeoutSecs),
    memorySize: s.drainMemoryMb,
    environment: {
      // The one setting the drain and ingest-api share: which buffer (which events the drain receives).
      SPILLWAY_BUFFER: buffer.kind,
      SPILLWAY_KAFKA_BOOTSTRAP: topic.bootstrap,
      SPILLWAY_KAFKA_AUTH: 'iam',
      SPILLWAY_MAX_CONNECTS_PER_SEC: String(s.maxConnectsPerSec),
      SPILLWAY_DEADLINE_MARGIN: `${s.drainDeadlineMarginSecs}s`,
      SPILLWAY_DLQ_URL: buffer.deadLetters.queueUrl,
      SPILLWAY_DLQ_BUCKET: buffer.deadLetterObjects.bucketName,
      // Where ingest-api keeps values too large for the buffer (claims/): read, then removed
      // once Kafka acknowledged the record.
      SPILLWAY_CLAIM_BUCKET: buffer.deadLetterObjects.bucketName,
      // The drain's allocator (mimalloc, read at process start): hand freed memory back at once
      // and no transparent huge pages. One 10,000 × 1 KiB event peaks at ~66 MiB instead of
      // ~110 MiB — the event's bytes, freed as it is parsed, were kept for a second — at no
      // measurable CPU (bench/run's peak RSS row runs the drain with these same two).
      MIMALLOC_PURGE_DELAY: '0',
      MIMALLOC_ALLOW_THP: '0',
    },
  });
  if (s.drainCapacityProvider) onManagedInstances(stack, s, network, fn);
  // Least privilege on the cluster: connect and write idempotently; write and describe only the
  // configured topics.
  fn.addToRolePolicy(
    new iam.PolicyStatement({
      actions: ['kafka-cluster:Connect', 'kafka-cluster:WriteDataIdempotently'],
      resources: [cluster.arn],
    }),
  );
  fn.addToRolePolicy(
    new iam.PolicyStatement({
      actions: ['kafka-cluster:WriteData', 'kafka-cluster:DescribeTopic'],
      resources: s.topics.map(cluster.topicArn),
    }),
  );
  buffer.deadLetters.grantSendMessages(fn);
  buffer.deadLetterObjects.grantPut(fn, 'dead-letters/*');
  // Read a value; once delivered, overwrite it with the delivered marker (an empty object).
  buffer.deadLetterObjects.grantRead(fn, 'claims/*');
  buffer.deadLetterObjects.grantPut(fn, 'claims/*');
  // The mapping's own event counts (polled, invoked, failed-invoke, dropped, …), for the alarms
  // and the dashboard (observability.ts).
  const metricsConfig = { metrics: [lambda.MetricType.EVENT_COUNT] };
  if (buffer.queue) {
    const source = new sources.SqsEventSource(buffer.queue, {
      batchSize: s.drainBatchSize,
      maxBatchingWindow: cdk.Duration.seconds(s.drainBatchingWindowSecs),
      // Provisioned mode sets concurrency through its pollers; the two cannot be combined.
      ...(s.drainPollers
        ? { provisionedPollerConfig: { minimumPollers: s.drainPollers.min, maximumPollers: s.drainPollers.max } }
        : { maxConcurrency: s.drainMaxConcurrency }),
      reportBatchItemFailures: true,
      metricsConfig,
    });
    fn.addEventSource(source);
    return { fn, mappingId: source.eventSourceMappingId };
  } else if (buffer.stream) {
    const source = new sources.KinesisEventSource(buffer.stream, {
      metricsConfig,
      startingPosition: lambda.StartingPosition.TRIM_HORIZON,
      batchSize: s.drainBatchSize,
      maxBatchingWindow: cdk.Duration.seconds(s.drainBatchingWindowSecs),
      bisectBatchOnError: true,
      retryAttempts: s.kinesisMaxRetries,
      maxRecordAge: cdk.Duration.seconds(s.kinesisMaxRecordAgeSecs),
      onFailure: new sources.SqsDlq(buffer.deadLetters),
      reportBatchItemFailures: true,
    });
    fn.addEventSource(source);
    return { fn, mappingId: source.eventSourceMappingId };
  }
  throw new Error('a buffer is a queue or a stream');
}

/**
 * Puts the drain on Lambda Managed Instances: its capacity provider (the stack's own in the private
 * subnets with the Kafka clients' security group, or the operator's), drainConcurrencyPerEnvironment
 * invocations per environment (the runtime serves them at once through one producer: `lambda::run`),
 * 2 GiB per vCPU, and each deploy published to $LATEST.PUBLISHED — the version the event source
 * mapping's unqualified ARN invokes; a function on a capacity provider runs only published versions.
 */
/** Environments the drain may have on a capacity provider: 2,400 connections ÷ 3 each. */
export const MAX_DRAIN_ENVIRONMENTS = 800;

function onManagedInstances(stack: cdk.Stack, s: Settings, network: Network, fn: lambda.Function): void {
  const capacityProviderArn =
    s.drainCapacityProvider === 'create'
      ? new lambda.CapacityProvider(stack, 'DrainCapacity', {
          securityGroups: [network.clients],
          subnets: network.vpc.selectSubnets(network.subnets).subnets,
          architectures: [lambda.Architecture.ARM_64],
          scalingOptions: lambda.ScalingOptions.auto(),
        }).capacityProviderArn
      : s.drainCapacityProvider!;
  const cfn = fn.node.defaultChild as lambda.CfnFunction;
  cfn.capacityProviderConfig = {
    lambdaManagedInstancesCapacityProviderConfig: {
      capacityProviderArn,
      perExecutionEnvironmentMaxConcurrency: s.drainConcurrencyPerEnvironment,
      executionEnvironmentMemoryGiBPerVCpu: 2,
    },
  };
  cfn.publishToLatestPublished = true;
  // Lambda scales these environments on CPU as well as concurrency, so the invocations may spread
  // over more of them than invocations ÷ drainConcurrencyPerEnvironment: bound the environments
  // by the connection budget (80 % of MSK Serverless's 3,000, about 3 connections each), and keep
  // AWS's 3 for zone resilience.
  cfn.functionScalingConfig = {
    minExecutionEnvironments: 3,
    maxExecutionEnvironments: MAX_DRAIN_ENVIRONMENTS,
  };
}
