// Every deploy-time option, read from CDK context (`-c name=value` or cdk.json), with defaults.
// A wrong value stops the synth with an error that names the option and what it accepts.

import * as path from 'path';
import { Node } from 'constructs';

export type BufferKind = 'sqs' | 'kinesis';
export type IngestKind = 'lambda' | 'direct';
export type AuthKind = 'iam' | 'apikey';

export interface ExistingCluster {
  /** The MSK cluster (serverless or provisioned with IAM auth). */
  readonly clusterArn: string;
  /** Its VPC, private subnets (comma-separated) and their availability zones (comma-separated). */
  readonly vpcId: string;
  readonly privateSubnetIds: string[];
  readonly availabilityZones: string[];
  /** A security group of the cluster; the stack lets its functions in on 9098. */
  readonly clusterSecurityGroupId: string;
}

export interface Settings {
  readonly stackName: string;
  readonly buffer: BufferKind;
  readonly ingest: IngestKind;
  readonly auth: AuthKind;
  /** Topics callers may write to; the first is the default. */
  readonly topics: string[];
  readonly partitions: number;
  readonly deleteTopicOnDestroy: boolean;
  readonly existingCluster?: ExistingCluster;
  readonly maxAzs: number;
  // Drain
  readonly drainTimeoutSecs: number;
  /** SPILLWAY_DEADLINE_MARGIN: the drain stops producing this long before its timeout. */
  readonly drainDeadlineMarginSecs: number;
  readonly drainMemoryMb: number;
  readonly drainBatchSize: number;
  readonly drainBatchingWindowSecs: number;
  readonly drainMaxConcurrency: number;
  readonly maxConnectsPerSec: number;
  readonly maxReceiveCount: number;
  // Consumer
  /**
   * Provisioned pollers for the consumer's MSK mapping (0: on-demand). Only a provisioned mapping
   * takes retry limits, bisection and an on-failure destination; on-demand, a batch the handler
   * fails comes again until it succeeds.
   */
  readonly consumerPollers: number;
  /** Provisioned mode: retries of a failed batch before its records go to the on-failure queue. */
  readonly consumerRetryAttempts: number;
  // Kinesis
  readonly kinesisShards: number;
  readonly kinesisMaxRetries: number;
  readonly kinesisMaxRecordAgeSecs: number;
  /**
   * How long a record stays in the stream after the mapping gave up on it (kinesisMaxRecordAgeSecs):
   * the time an operator has to replay its on-failure pointer. Stream retention is the two together.
   */
  readonly kinesisReplayWindowHours: number;
  // Ingest
  /** SPILLWAY_BUFFER_RETRY_BUDGET: how long ingest-api retries failed buffer writes. */
  readonly ingestRetryBudgetSecs: number;
  // API
  readonly throttleRateLimit: number;
  readonly throttleBurstLimit: number;
  readonly quotaPerDay: number;
  // Operations
  readonly logRetentionDays: number;
  readonly oldestMessageAlarmSecs: number;
  readonly iteratorAgeAlarmMs: number;
  readonly alarmEmail?: string;
  /** Folder with one sub-folder per Lambda binary holding `bootstrap` (cargo lambda's output). */
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

class Reader {
  constructor(private readonly node: Node) {}

  raw(name: string): unknown {
    return this.node.tryGetContext(name);
  }

  string(name: keyof typeof DEFAULTS | string, fallback?: string): string | undefined {
    const v = this.raw(name);
    if (v === undefined || v === null || v === '') return fallback;
    return String(v);
  }

  choice<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
    const v = this.string(name, fallback)!;
    if (!(allowed as readonly string[]).includes(v)) {
      throw new Error(`context ${name}=${v}: expected one of ${allowed.join(', ')}`);
    }
    return v as T;
  }

  number(name: string, fallback: number, min: number, max: number): number {
    const v = this.raw(name);
    if (v === undefined || v === null || v === '') return fallback;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new Error(`context ${name}=${v}: expected a whole number from ${min} to ${max}`);
    }
    return n;
  }

  bool(name: string, fallback: boolean): boolean {
    const v = this.raw(name);
    if (v === undefined || v === null || v === '') return fallback;
    if (v === true || v === 'true') return true;
    if (v === false || v === 'false') return false;
    throw new Error(`context ${name}=${v}: expected true or false`);
  }

  list(name: string, fallback?: string): string[] {
    return (this.string(name, fallback) ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
  }
}

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
    drainMemoryMb: r.number('drainMemoryMb', DEFAULTS.drainMemoryMb, 128, 10_240),
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

function existingCluster(r: Reader): ExistingCluster | undefined {
  const clusterArn = r.string('clusterArn');
  if (clusterArn === undefined) return undefined;
  const need = ['vpcId', 'privateSubnetIds', 'availabilityZones', 'clusterSecurityGroupId'];
  const missing = need.filter((n) => r.string(n) === undefined);
  if (missing.length > 0) {
    throw new Error(`context clusterArn is set: also set ${missing.join(', ')} (the cluster's network)`);
  }
  if (!/^arn:aws[a-z-]*:kafka:[a-z0-9-]+:\d{12}:cluster\/[^/]+\/[^/]+$/.test(clusterArn)) {
    throw new Error(`context clusterArn=${clusterArn}: expected arn:aws:kafka:<region>:<account>:cluster/<name>/<uuid>`);
  }
  const privateSubnetIds = r.list('privateSubnetIds');
  const availabilityZones = r.list('availabilityZones');
  if (privateSubnetIds.length !== availabilityZones.length) {
    throw new Error('context privateSubnetIds and availabilityZones: give one zone per subnet, in the same order');
  }
  return {
    clusterArn,
    vpcId: r.string('vpcId')!,
    privateSubnetIds,
    availabilityZones,
    clusterSecurityGroupId: r.string('clusterSecurityGroupId')!,
  };
}
