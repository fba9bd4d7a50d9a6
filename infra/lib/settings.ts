// Every deploy-time option, read from CDK context (`-c name=value` or cdk.json), with defaults.
// A wrong value stops the synth with an error that names the option and what it accepts.

import * as path from 'path';
import { Node } from 'constructs';
import { existingCluster, Reader } from './context';

export type BufferKind = 'sqs' | 'kinesis';
export type IngestKind = 'lambda' | 'direct';
export type AuthKind = 'iam' | 'apikey';

/** An MSK cluster of the operator's, used instead of creating one (context clusterArn and the four after it). */
export interface ExistingCluster {
  /** The MSK cluster (serverless or provisioned with IAM auth): arn:aws:kafka:<region>:<account>:cluster/<name>/<uuid>. */
  readonly clusterArn: string;
  /** Its VPC: the functions get their network interfaces in it. */
  readonly vpcId: string;
  /** Private subnets (comma-separated) for the functions, with routes to MSK and to AWS APIs. */
  readonly privateSubnetIds: string[];
  /** The availability zone of each subnet (comma-separated), in the same order. */
  readonly availabilityZones: string[];
  /** A security group of the cluster; the stack lets its functions in on 9098. */
  readonly clusterSecurityGroupId: string;
}

export interface Settings {
  /**
   * The stack's name, default `Spillway`; also in the names of the cluster (`<name>-msk`), the API
   * and the dashboard. Another name deploys a second, independent pipeline beside the first.
   */
  readonly stackName: string;
  /**
   * `sqs` (default) or `kinesis`. SQS scales with no capacity to plan, takes up to 256 KiB a
   * message and dead-letters after maxReceiveCount receives; Kinesis takes 1 MiB records but only
   * its shards' throughput, and retries a failing batch in its shard, holding up what follows.
   */
  readonly buffer: BufferKind;
  /**
   * `lambda` (default): ingest-api, with every HTTP API feature; `direct`: API Gateway writes to the
   * buffer itself — no Lambda in the hot path (less latency and cost), but only body and
   * `Kafka-Key` (no headers or idempotency keys), and only DIRECT_CONTENT_TYPES (else 415).
   */
  readonly ingest: IngestKind;
  /**
   * `iam` (default): callers sign with SigV4; `apikey`: API keys with a usage plan. A key is simpler
   * to hand out but is a shared secret, with no per-caller IAM policy or CloudTrail identity.
   */
  readonly auth: AuthKind;
  /**
   * Topics callers may write to; the first is the default and the consumer's. Default
   * `spillway-events`; each 1 to 249 of [a-zA-Z0-9._-], not `.` or `..`. Each one is a custom
   * resource, and with ingest=direct its own API resource and mapping templates.
   */
  readonly topics: string[];
  /**
   * Partitions per topic, default 6, 1 to 1000: more let more consumer batches run at once, but
   * count against MSK's partition quota and are billed. Raising it adds partitions (keys may map
   * to other partitions after); Kafka cannot remove any, so lowering it changes nothing (a warning).
   */
  readonly partitions: number;
  /** Delete the topics and their records with the stack, default false (true grants kafka-cluster:DeleteTopic). */
  readonly deleteTopicOnDestroy: boolean;
  /** Use this cluster and its network instead of creating a VPC and MSK Serverless; default unset. */
  readonly existingCluster?: ExistingCluster;
  /**
   * Availability zones of the VPC the stack creates, default 2, 2 to 3 (MSK Serverless needs two):
   * a third survives more zone failures for more subnets and interfaces. One NAT gateway either way.
   */
  readonly maxAzs: number;
  // Drain
  /**
   * The drain's timeout, default 30 s, 5 to 900, at least 2 × drainDeadlineMarginSecs. The SQS
   * visibility timeout is 6 × this: longer gives each batch more time, but a failed one comes back later.
   */
  readonly drainTimeoutSecs: number;
  /**
   * SPILLWAY_DEADLINE_MARGIN: the drain stops producing this long before its timeout. Default 5 s,
   * 1 to 450, at most half of drainTimeoutSecs: more leaves time to report and for in-flight acks
   * on a slow cluster, less leaves more of each invocation for producing.
   */
  readonly drainDeadlineMarginSecs: number;
  /**
   * The drain's memory, default 256 MB, 128 to 10,240 (2048 and more, default 2048, on a capacity
   * provider). CPU grows with it, and so does the price; one batch of 10,000 × 1 KiB peaks near
   * 120 MiB.
   */
  readonly drainMemoryMb: number;
  /**
   * Records per invocation, default 100, 1 to 10,000 (SQS: above 10 only with a batching window).
   * Larger means fewer invocations and Kafka round trips, but more memory and time per invocation.
   */
  readonly drainBatchSize: number;
  /** How long the mapping gathers a batch, default 1 s, 0 to 300: fuller batches for up to that much latency. */
  readonly drainBatchingWindowSecs: number;
  /**
   * Concurrent drain instances of the SQS mapping, default 20, 2 to 1000 (Kinesis: one per shard).
   * More drain a backlog faster, but each holds Kafka connections: instances × connections must
   * stay under MSK Serverless's 3,000 per cluster (`spillway tune` checks 80 %).
   */
  readonly drainMaxConcurrency: number;
  /**
   * `pollers=MIN:MAX`: the SQS mapping in provisioned mode (`ProvisionedPollerConfig`), MIN 2 to 200
   * pollers always on (billed whether or not messages flow), MAX MIN to 2000. Each poller handles
   * about 1 MB/s, up to 10 concurrent invokes and 10 ReceiveMessage calls/s; concurrency then
   * follows the pollers, so it cannot be combined with `drainMaxConcurrency`. Unset: on-demand.
   */
  readonly drainPollers?: { readonly min: number; readonly max: number };
  /**
   * `drainCapacityProvider`: run the drain on Lambda Managed Instances — `create` (a capacity
   * provider of the stack's, in the private subnets with the Kafka clients' security group) or the
   * ARN of one of yours. One execution environment then serves drainConcurrencyPerEnvironment
   * batches at once over one producer: fewer MSK connections for the same concurrency, EC2 prices
   * (plus Lambda's management fee) instead of per-invocation ones, at least 3 environments always
   * on, and scaling on CPU that can throttle (the queue keeps the messages) when traffic more than
   * doubles within 5 minutes. Needs drainMemoryMb ≥ 2048 (the default with it). Unset: Lambda's
   * default compute, one batch per environment.
   */
  readonly drainCapacityProvider?: string;
  /**
   * With drainCapacityProvider=<ARN>: the provider's security group, which the stack lets in on
   * MSK's IAM port (9098). Required with an ARN: a provider the cluster refuses would fail every
   * batch until the queue dead-letters it all.
   */
  readonly drainCapacityProviderSecurityGroupId?: string;
  /**
   * With drainCapacityProvider: batches one environment drains at once
   * (PerExecutionEnvironmentMaxConcurrency), default 10, 1 to 1600. More share one producer and
   * its connections, but share the environment's CPU and memory too.
   */
  readonly drainConcurrencyPerEnvironment?: number;
  /**
   * SPILLWAY_MAX_CONNECTS_PER_SEC: Kafka clients a drain instance may create per second, default 2,
   * 1 to 100. MSK Serverless takes 100 connection attempts a second per cluster from all instances:
   * higher reconnects faster, but many instances at once get refused.
   */
  readonly maxConnectsPerSec: number;
  /**
   * SQS receives before a message goes to the DLQ, default 5, 5 to 1000 (AWS: at least 5). A failed
   * receive waits out the visibility timeout, so more ride out a longer Kafka outage and fewer set
   * messages aside sooner; records the drain finds undeliverable go to the DLQ at once.
   */
  readonly maxReceiveCount: number;
  // Consumer
  /**
   * Provisioned pollers for the consumer's MSK mapping (0: on-demand). Only a provisioned mapping
   * takes retry limits, bisection and an on-failure destination; on-demand, a batch the handler
   * fails comes again until it succeeds. Default 0; at most 200 (CDK refuses more, though the
   * context check allows 2000); scales to 4 × as many. Pollers are billed per hour, busy or not.
   */
  readonly consumerPollers: number;
  /**
   * Provisioned mode: retries of a failed batch before its records go to the on-failure queue.
   * Default 3, 0 to 10,000: more ride out a longer failure but hold up the partition longer.
   */
  readonly consumerRetryAttempts: number;
  // Kinesis
  /** Shards, default 2, 1 to 500: each takes 1 MB/s or 1,000 records/s, feeds one drain instance, and is billed hourly. */
  readonly kinesisShards: number;
  /** Retries of a failed batch (bisected) before its on-failure pointer goes to the DLQ, default 5, 0 to 10,000; they hold up its shard. */
  readonly kinesisMaxRetries: number;
  /**
   * How old a record may get and still be retried, default 3600 s, 60 to 604,800 (7 days): longer
   * rides out a longer outage, but holds up its shard and adds to the stream's retention.
   */
  readonly kinesisMaxRecordAgeSecs: number;
  /**
   * How long a record stays in the stream after the mapping gave up on it (kinesisMaxRecordAgeSecs):
   * the time an operator has to replay its on-failure pointer. Stream retention is the two together.
   * Default 23 h, 1 to 8760, the sum at most 8760 h; past 24 h and 7 days retention costs more.
   */
  readonly kinesisReplayWindowHours: number;
  // Ingest
  /**
   * SPILLWAY_BUFFER_RETRY_BUDGET: how long ingest-api retries failed buffer writes. Default 3 s,
   * 0 to 20 (the function's timeout is this + 12 s, under API Gateway's 29): longer rides out more
   * throttling before a 503, but holds callers longer.
   */
  readonly ingestRetryBudgetSecs: number;
  // API
  /**
   * The stage's (and usage plan's) steady rate, requests/s, default 1000, 1 to 1,000,000; above it
   * callers get 429. Higher lets more of a burst into the buffer, within the account's own quota.
   */
  readonly throttleRateLimit: number;
  /** The stage's (and usage plan's) burst, default 2000, 1 to 1,000,000; as throttleRateLimit. */
  readonly throttleBurstLimit: number;
  /** auth=apikey: requests per key per day, default 10,000,000, 1 to 1,000,000,000; past it, 429 until tomorrow. */
  readonly quotaPerDay: number;
  // Operations
  /**
   * Retention of every log group, default 30 days, 1 to 3653, one of CloudWatch Logs' values (1, 3,
   * 5, 7, 14, 30, 60, 90, …; not checked at synth). Longer keeps more history at storage cost.
   */
  readonly logRetentionDays: number;
  /**
   * SQS: alarm when the oldest message is older, default 300 s, 60 to 1,209,600. Lower warns of a
   * slow drain sooner, and of every burst the buffer absorbs as designed.
   */
  readonly oldestMessageAlarmSecs: number;
  /**
   * Kinesis: alarm when the drain's iterator age is above this, default 300,000 ms, 1000 to
   * 604,800,000. Keep it well under the retention: older records are lost.
   */
  readonly iteratorAgeAlarmMs: number;
  /** Email subscribed to the alarm topic, default none; alarms reach it once the address confirms. */
  readonly alarmEmail?: string;
  /**
   * Per-tenant fairness (SQS fair queues): where ingest-api takes a message's tenant from,
   * `api-key` (the API key's id; with auth=apikey) or `header:<name>`; the tenant becomes the
   * standard queue's message group. Unset: no tenant. Not for FIFO queues or Kinesis.
   */
  readonly tenantFrom?: string;
  /**
   * Folder with one sub-folder per Lambda binary holding `bootstrap` (cargo lambda's output).
   * Default the repository's target/lambda; synth stops when a binary is missing.
   */
  readonly lambdaAssets: string;
}

export const DEFAULTS = {
  stackName: 'Spillway',
  buffer: 'sqs',
  ingest: 'lambda',
  auth: 'iam',
  topics: 'spillway-events',
  partitions: 6,
  deleteTopicOnDestroy: false,
  maxAzs: 2,
  drainTimeoutSecs: 30,
  drainDeadlineMarginSecs: 5,
  drainMemoryMb: 256,
  drainBatchSize: 100,
  drainBatchingWindowSecs: 1,
  drainMaxConcurrency: 20,
  maxConnectsPerSec: 2,
  maxReceiveCount: 5,
  consumerPollers: 0,
  consumerRetryAttempts: 3,
  kinesisShards: 2,
  kinesisMaxRetries: 5,
  kinesisMaxRecordAgeSecs: 3600,
  kinesisReplayWindowHours: 23,
  ingestRetryBudgetSecs: 3,
  throttleRateLimit: 1000,
  throttleBurstLimit: 2000,
  quotaPerDay: 10_000_000,
  logRetentionDays: 30,
  oldestMessageAlarmSecs: 300,
  iteratorAgeAlarmMs: 300_000,
  lambdaAssets: path.join(__dirname, '..', '..', 'target', 'lambda'),
} as const;

/** Kafka topic names: 1 to 249 of [a-zA-Z0-9._-], not `.` or `..` (as the drain checks them). */
const TOPIC = /^[a-zA-Z0-9._-]{1,249}$/;

export function settingsFromContext(node: Node): Settings {
  const r = new Reader(node);
  const topics = r.list('topics', DEFAULTS.topics);
  const bad = topics.find((t) => !TOPIC.test(t) || t === '.' || t === '..');
  if (topics.length === 0 || bad !== undefined) {
    throw new Error(
      `context topics=${r.string('topics')}: expected comma-separated Kafka topic names of 1 to 249 letters, digits, '.', '_' or '-'${bad ? ` ('${bad}' is not)` : ''}`,
    );
  }
  const drainTimeoutSecs = r.number('drainTimeoutSecs', DEFAULTS.drainTimeoutSecs, 5, 900);
  const drainDeadlineMarginSecs = r.number('drainDeadlineMarginSecs', DEFAULTS.drainDeadlineMarginSecs, 1, 450);
  // Delivery rule 11: the margin must leave at least half of each invocation for producing, or
  // every batch ends "not produced" and maxReceiveCount moves the whole queue to the DLQ.
  if (drainDeadlineMarginSecs * 2 > drainTimeoutSecs) {
    throw new Error(
      `context drainTimeoutSecs=${drainTimeoutSecs} with drainDeadlineMarginSecs=${drainDeadlineMarginSecs}: the margin leaves less than half of each invocation for producing; use a timeout of at least ${drainDeadlineMarginSecs * 2} s or a smaller margin`,
    );
  }
  const buffer = r.choice<BufferKind>('buffer', ['sqs', 'kinesis'], DEFAULTS.buffer);
  const settings: Settings = {
    stackName: r.string('stackName', DEFAULTS.stackName)!,
    buffer,
    ingest: r.choice<IngestKind>('ingest', ['lambda', 'direct'], DEFAULTS.ingest),
    auth: r.choice<AuthKind>('auth', ['iam', 'apikey'], DEFAULTS.auth),
    topics,
    partitions: r.number('partitions', DEFAULTS.partitions, 1, 1000),
    deleteTopicOnDestroy: r.bool('deleteTopicOnDestroy', DEFAULTS.deleteTopicOnDestroy),
    existingCluster: existingCluster(r),
    maxAzs: r.number('maxAzs', DEFAULTS.maxAzs, 2, 3),
    drainTimeoutSecs,
    drainDeadlineMarginSecs,
    ...drainCompute(r),
    drainBatchSize: r.number('drainBatchSize', DEFAULTS.drainBatchSize, 1, 10_000),
    drainBatchingWindowSecs: r.number('drainBatchingWindowSecs', DEFAULTS.drainBatchingWindowSecs, 0, 300),
    drainMaxConcurrency: r.number('drainMaxConcurrency', DEFAULTS.drainMaxConcurrency, 2, 1000),
    maxConnectsPerSec: r.number('maxConnectsPerSec', DEFAULTS.maxConnectsPerSec, 1, 100),
    consumerPollers: r.number('consumerPollers', DEFAULTS.consumerPollers, 0, 2000),
    consumerRetryAttempts: r.number('consumerRetryAttempts', DEFAULTS.consumerRetryAttempts, 0, 10_000),
    maxReceiveCount: r.number('maxReceiveCount', DEFAULTS.maxReceiveCount, 5, 1000),
    kinesisShards: r.number('kinesisShards', DEFAULTS.kinesisShards, 1, 500),
    kinesisMaxRetries: r.number('kinesisMaxRetries', DEFAULTS.kinesisMaxRetries, 0, 10_000),
    kinesisMaxRecordAgeSecs: r.number('kinesisMaxRecordAgeSecs', DEFAULTS.kinesisMaxRecordAgeSecs, 60, 604_800),
    kinesisReplayWindowHours: r.number('kinesisReplayWindowHours', DEFAULTS.kinesisReplayWindowHours, 1, 8760),
    // API Gateway ends an integration after 29 s: the retries and a last write must fit.
    ingestRetryBudgetSecs: r.number('ingestRetryBudgetSecs', DEFAULTS.ingestRetryBudgetSecs, 0, 20),
    throttleRateLimit: r.number('throttleRateLimit', DEFAULTS.throttleRateLimit, 1, 1_000_000),
    throttleBurstLimit: r.number('throttleBurstLimit', DEFAULTS.throttleBurstLimit, 1, 1_000_000),
    quotaPerDay: r.number('quotaPerDay', DEFAULTS.quotaPerDay, 1, 1_000_000_000),
    logRetentionDays: r.number('logRetentionDays', DEFAULTS.logRetentionDays, 1, 3653),
    oldestMessageAlarmSecs: r.number('oldestMessageAlarmSecs', DEFAULTS.oldestMessageAlarmSecs, 60, 1_209_600),
    iteratorAgeAlarmMs: r.number('iteratorAgeAlarmMs', DEFAULTS.iteratorAgeAlarmMs, 1000, 604_800_000),
    alarmEmail: r.string('alarmEmail'),
    drainPollers: drainPollers(r, buffer),
    tenantFrom: tenantFrom(r.string('tenantFrom'), buffer, r.choice<AuthKind>('auth', ['iam', 'apikey'], DEFAULTS.auth)),
    lambdaAssets: path.resolve(r.string('lambdaAssets', DEFAULTS.lambdaAssets)!),
  };
  if (buffer === 'sqs' && settings.drainBatchSize > 10 && settings.drainBatchingWindowSecs === 0) {
    throw new Error(
      `context drainBatchSize=${settings.drainBatchSize}: an SQS batch size above 10 needs drainBatchingWindowSecs of at least 1`,
    );
  }
  if (streamRetentionHours(settings) > 8760) {
    throw new Error(
      `context kinesisMaxRecordAgeSecs=${settings.kinesisMaxRecordAgeSecs} with kinesisReplayWindowHours=${settings.kinesisReplayWindowHours}: the stream would have to keep records ${streamRetentionHours(settings)} h; Kinesis keeps them at most 8760 h`,
    );
  }
  return settings;
}

/**
 * The Kinesis buffer's retention: a record the drain cannot deliver is retried until
 * kinesisMaxRecordAgeSecs, and its on-failure pointer can be replayed only while the record is still
 * in the stream — for kinesisReplayWindowHours more. At least Kinesis's 24 h.
 */
export function streamRetentionHours(s: Pick<Settings, 'kinesisMaxRecordAgeSecs' | 'kinesisReplayWindowHours'>): number {
  return Math.max(24, Math.ceil(s.kinesisMaxRecordAgeSecs / 3600) + s.kinesisReplayWindowHours);
}

/** The ingest function's timeout: its buffer-write retries, one last write (10 s), and 2 s more. */
export function ingestTimeoutSecs(s: Pick<Settings, 'ingestRetryBudgetSecs'>): number {
  return s.ingestRetryBudgetSecs + 12;
}

/** `tenantFrom`, checked: `api-key` (needs auth=apikey) or `header:<name>`, on an SQS buffer. */
function tenantFrom(value: string | undefined, buffer: BufferKind, auth: AuthKind): string | undefined {
  if (value === undefined) return undefined;
  const header = /^header:[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(value);
  if (value !== 'api-key' && !header) {
    throw new Error(`context tenantFrom=${value}: expected api-key or header:<name> with a valid header name`);
  }
  if (buffer !== 'sqs') {
    throw new Error(`context tenantFrom=${value}: tenants are SQS fair-queue message groups; the ${buffer} buffer has none`);
  }
  if (value === 'api-key' && auth !== 'apikey') {
    throw new Error(`context tenantFrom=api-key: requests carry an API key id only with auth=apikey`);
  }
  return value;
}

/** Memory of a function on Lambda Managed Instances: at least 2 GB (and 1 vCPU). */
export const MANAGED_INSTANCES_MIN_MEMORY_MB = 2048;

/**
 * Where the drain runs: drainCapacityProvider (`create` or a capacity provider's ARN) with its
 * drainConcurrencyPerEnvironment, and drainMemoryMb — at least 2048 on a capacity provider.
 */
function drainCompute(
  r: Reader,
): Pick<Settings, 'drainCapacityProvider' | 'drainCapacityProviderSecurityGroupId' | 'drainConcurrencyPerEnvironment' | 'drainMemoryMb'> {
  const provider = r.string('drainCapacityProvider');
  const securityGroup = r.string('drainCapacityProviderSecurityGroupId');
  if (securityGroup !== undefined && (provider === undefined || provider === 'create')) {
    throw new Error(
      'context drainCapacityProviderSecurityGroupId is for a capacity provider given by ARN; the one the stack creates uses the Kafka clients\' security group',
    );
  }
  if (securityGroup !== undefined && !/^sg-[0-9a-f]{8,17}$/.test(securityGroup)) {
    throw new Error(`context drainCapacityProviderSecurityGroupId=${securityGroup}: expected sg-<hex id>`);
  }
  if (provider === undefined) {
    if (r.string('drainConcurrencyPerEnvironment') !== undefined) {
      throw new Error(
        'context drainConcurrencyPerEnvironment is set without drainCapacityProvider: only Lambda Managed Instances serve several batches in one environment',
      );
    }
    return { drainMemoryMb: r.number('drainMemoryMb', DEFAULTS.drainMemoryMb, 128, 10_240) };
  }
  if (provider !== 'create' && !/^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:capacity-provider:[A-Za-z0-9_-]+$/.test(provider)) {
    throw new Error(
      `context drainCapacityProvider=${provider}: expected create or arn:aws:lambda:<region>:<account>:capacity-provider:<name>`,
    );
  }
  const memory = r.raw('drainMemoryMb');
  if (memory !== undefined && memory !== null && memory !== '' && Number(memory) < MANAGED_INSTANCES_MIN_MEMORY_MB) {
    throw new Error(
      `context drainMemoryMb=${memory} with drainCapacityProvider: a function on Lambda Managed Instances takes at least ${MANAGED_INSTANCES_MIN_MEMORY_MB} MB`,
    );
  }
  if (provider !== 'create' && securityGroup === undefined) {
    throw new Error(
      `context drainCapacityProvider=${provider}: also set drainCapacityProviderSecurityGroupId, the provider's security group, so that the cluster lets its instances in on 9098`,
    );
  }
  return {
    drainCapacityProvider: provider,
    drainCapacityProviderSecurityGroupId: securityGroup,
    drainConcurrencyPerEnvironment: r.number('drainConcurrencyPerEnvironment', 10, 1, 1600),
    drainMemoryMb: r.number('drainMemoryMb', MANAGED_INSTANCES_MIN_MEMORY_MB, MANAGED_INSTANCES_MIN_MEMORY_MB, 10_240),
  };
}

/** `pollers=MIN:MAX`, checked: SQS only, 2 ≤ MIN ≤ 200, MIN ≤ MAX ≤ 2000, not with drainMaxConcurrency. */
function drainPollers(r: Reader, buffer: BufferKind): { min: number; max: number } | undefined {
  const value = r.string('pollers');
  if (value === undefined) return undefined;
  const m = /^(\d+):(\d+)$/.exec(value);
  const [min, max] = m ? [Number(m[1]), Number(m[2])] : [NaN, NaN];
  if (!m || min < 2 || min > 200 || max < min || max > 2000) {
    throw new Error(`context pollers=${value}: expected MIN:MAX with MIN from 2 to 200 and MAX from MIN to 2000`);
  }
  if (buffer !== 'sqs') {
    throw new Error(`context pollers=${value}: provisioned pollers are for the SQS mapping; a Kinesis mapping reads one batch per shard`);
  }
  if (r.string('drainMaxConcurrency') !== undefined) {
    throw new Error(`context pollers=${value} with drainMaxConcurrency: a provisioned SQS mapping takes no maximum concurrency (its pollers set it); choose one`);
  }
  return { min, max };
}
