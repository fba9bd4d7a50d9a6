// The stack, synthesized offline for every buffer × ingest combination: the properties the
// pipeline's delivery rules depend on, least privilege for Kafka, logs and alarms, cdk-nag with
// nothing unexplained, cfn-lint clean, and the direct integration's mapping templates rendered by a
// real Velocity engine and decoded by the drain's own envelope codec.

import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { App, Aspects } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { settingsFromContext } from '../lib/settings';
import { BINARIES, SpillwayStack } from '../lib/spillway-stack';

const REPO = path.resolve(__dirname, '..', '..');
const PYTHON = process.env.SPILLWAY_INFRA_PYTHON ?? 'python3';
const CFN_LINT = process.env.CFN_LINT ?? 'cfn-lint';

let assets: string;
let scratch: string;

beforeAll(() => {
  // Synth needs a file per binary; what the file holds does not matter to a template.
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'spillway-infra-'));
  assets = path.join(scratch, 'lambda');
  for (const b of BINARIES) {
    fs.mkdirSync(path.join(assets, b), { recursive: true });
    fs.writeFileSync(path.join(assets, b, 'bootstrap'), `test asset for ${b}\n`);
  }
});

afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

interface Synth {
  stack: SpillwayStack;
  template: Template;
  json: any;
}

function synth(context: Record<string, string>): Synth {
  const app = new App({ context: { ...context, lambdaAssets: assets } });
  // Environment-agnostic, as `cdk synth` without credentials: zones come from Fn::GetAZs.
  const stack = new SpillwayStack(app, 'Spillway', { settings: settingsFromContext(app.node) });
  Aspects.of(stack).add(new AwsSolutionsChecks());
  const template = Template.fromStack(stack);
  return { stack, template, json: template.toJSON() };
}

function resources(json: any, type: string): [string, any][] {
  return Object.entries(json.Resources).filter(([, r]: [string, any]) => r.Type === type) as [string, any][];
}

function functionId(json: any, prefix: string): string {
  const found = resources(json, 'AWS::Lambda::Function').find(([id]) => id.startsWith(prefix));
  if (!found) throw new Error(`no function ${prefix}`);
  return found[0];
}

const VARIANTS = [
  { buffer: 'sqs', ingest: 'lambda' },
  { buffer: 'sqs', ingest: 'direct' },
  { buffer: 'kinesis', ingest: 'lambda' },
  { buffer: 'kinesis', ingest: 'direct' },
  { buffer: 'sqs', ingest: 'direct', auth: 'apikey' },
  // The drain on Lambda Managed Instances, on a capacity provider of the stack's.
  { buffer: 'sqs', ingest: 'lambda', drainCapacityProvider: 'create' },
];

describe.each(VARIANTS)('buffer=$buffer ingest=$ingest auth=$auth drainCapacityProvider=$drainCapacityProvider', (variant) => {
  let s: Synth;
  beforeAll(() => {
    s = synth(Object.fromEntries(Object.entries(variant).filter(([, v]) => v !== undefined)) as Record<string, string>);
  });

  test('the drain mapping reports batch item failures', () => {
    const drain = functionId(s.json, 'Drain');
    const mappings = resources(s.json, 'AWS::Lambda::EventSourceMapping').filter(
      ([, r]) => r.Properties.FunctionName?.Ref === drain,
    );
    expect(mappings).toHaveLength(1);
    const props = mappings[0][1].Properties;
    expect(props.FunctionResponseTypes).toEqual(['ReportBatchItemFailures']);
    if (variant.buffer === 'sqs') {
      expect(props.ScalingConfig.MaximumConcurrency).toBe(20);
    } else {
      expect(props.BisectBatchOnFunctionError).toBe(true);
      expect(props.MaximumRetryAttempts).toBe(5);
      expect(props.MaximumRecordAgeInSeconds).toBe(3600);
      expect(props.DestinationConfig.OnFailure.Destination).toBeDefined();
    }
  });

  test('the drain is given its deadline margin explicitly, at most half its timeout', () => {
    const drain = s.json.Resources[functionId(s.json, 'Drain')].Properties;
    expect(drain.Environment.Variables.SPILLWAY_DEADLINE_MARGIN).toBe('5s');
    expect(drain.Timeout).toBeGreaterThanOrEqual(2 * 5);
  });

  test("the drain's allocator hands freed memory back at once (bench/run's peak RSS row runs it so)", () => {
    const env = s.json.Resources[functionId(s.json, 'Drain')].Properties.Environment.Variables;
    expect(env.MIMALLOC_PURGE_DELAY).toBe('0');
    expect(env.MIMALLOC_ALLOW_THP).toBe('0');
  });

  test('the drain is told the buffer kind by SPILLWAY_BUFFER, the one setting it shares with ingest-api', () => {
    const env = s.json.Resources[functionId(s.json, 'Drain')].Properties.Environment.Variables;
    expect(env.SPILLWAY_BUFFER).toBe(variant.buffer);
    // The drain reads only SPILLWAY_BUFFER now: a leftover SPILLWAY_SOURCE would be a second, unread answer.
    expect(env).not.toHaveProperty('SPILLWAY_SOURCE');
    if (variant.ingest === 'lambda') {
      const ingest = s.json.Resources[functionId(s.json, 'Ingest')].Properties.Environment.Variables;
      expect(ingest.SPILLWAY_BUFFER).toBe(env.SPILLWAY_BUFFER);
    }
  });

  test('the buffer queue hides a batch for at least 6 × the drain timeout, and redrives after ≥ 5 receives', () => {
    if (variant.buffer !== 'sqs') return;
    const timeout = s.json.Resources[functionId(s.json, 'Drain')].Properties.Timeout;
    const queues = resources(s.json, 'AWS::SQS::Queue').filter(([, r]) => r.Properties.RedrivePolicy);
    expect(queues).toHaveLength(1);
    const q = queues[0][1].Properties;
    expect(q.VisibilityTimeout).toBeGreaterThanOrEqual(6 * timeout);
    expect(q.RedrivePolicy.maxReceiveCount).toBeGreaterThanOrEqual(5);
    expect(q.SqsManagedSseEnabled).toBe(true);
  });

  test('no Kafka permission uses a wildcard action or resource', () => {
    let kafkaStatements = 0;
    for (const [, policy] of resources(s.json, 'AWS::IAM::Policy')) {
      for (const st of policy.Properties.PolicyDocument.Statement) {
        const actions: string[] = [st.Action].flat();
        if (!actions.some((a) => a.startsWith('kafka'))) continue;
        kafkaStatements++;
        for (const a of actions) expect(a).not.toMatch(/^kafka(-cluster)?:\*$|\*$/);
        for (const r of [st.Resource].flat()) expect(r).not.toBe('*');
      }
    }
    expect(kafkaStatements).toBeGreaterThanOrEqual(5);
  });

  test('every function logs to a log group with a retention, and traces with X-Ray', () => {
    const groups = Object.fromEntries(resources(s.json, 'AWS::Logs::LogGroup'));
    const functions = resources(s.json, 'AWS::Lambda::Function');
    expect(functions.length).toBeGreaterThanOrEqual(variant.ingest === 'lambda' ? 5 : 4);
    for (const [id, fn] of functions) {
      const ref = fn.Properties.LoggingConfig?.LogGroup?.Ref;
      expect([id, ref && groups[ref]?.Properties.RetentionInDays]).toEqual([id, 30]);
    }
    for (const [id, fn] of functions.filter(([id]) => !id.includes('Provider'))) {
      expect([id, fn.Properties.TracingConfig?.Mode]).toEqual([id, 'Active']);
      expect([id, fn.Properties.Architectures]).toEqual([id, ['arm64']]);
      expect([id, fn.Properties.Runtime]).toEqual([id, 'provided.al2023']);
    }
  });

  test('the alarm topic is encrypted with a key CloudWatch may use (alarms under alias/aws/sns never arrive)', () => {
    const topics = resources(s.json, 'AWS::SNS::Topic');
    expect(topics).toHaveLength(1);
    const keyRef = topics[0][1].Properties.KmsMasterKeyId;
    expect(JSON.stringify(keyRef)).not.toContain('alias/aws/sns');
    const keyId = keyRef['Fn::GetAtt']?.[0] ?? keyRef.Ref;
    const key = s.json.Resources[keyId];
    expect(key.Type).toBe('AWS::KMS::Key');
    expect(key.Properties.EnableKeyRotation).toBe(true);
    const cloudwatch = key.Properties.KeyPolicy.Statement.filter(
      (st: any) => st.Principal?.Service === 'cloudwatch.amazonaws.com' && st.Effect === 'Allow',
    );
    expect(cloudwatch).toHaveLength(1);
    expect([cloudwatch[0].Action].flat()).toEqual(expect.arrayContaining(['kms:Decrypt', 'kms:GenerateDataKey*']));
  });

  test('a Kinesis buffer keeps records for their retries and the replay window; ingest outlives its retries', () => {
    if (variant.buffer === 'kinesis') {
      const [[, stream]] = resources(s.json, 'AWS::Kinesis::Stream');
      expect(stream.Properties.RetentionPeriodHours).toBe(24); // 1 h of retries + 23 h to replay
    }
    if (variant.ingest === 'lambda') {
      const ingest = s.json.Resources[functionId(s.json, 'Ingest')].Properties;
      expect(ingest.Environment.Variables.SPILLWAY_BUFFER_RETRY_BUDGET).toBe('3s');
      expect(ingest.Timeout).toBeGreaterThanOrEqual(3 + 10);
      expect(ingest.Timeout).toBeLessThanOrEqual(29);
    }
  });

  test('dead letters too large for the DLQ go to an encrypted, private bucket that keeps them as long as the DLQ does', () => {
    const buckets = resources(s.json, 'AWS::S3::Bucket');
    expect(buckets).toHaveLength(1);
    const [bucketId, bucket] = buckets[0];
    expect(bucket.Properties.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.SSEAlgorithm).toBe('AES256');
    expect(bucket.Properties.PublicAccessBlockConfiguration).toEqual({
      BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true,
    });
    const dlq = resources(s.json, 'AWS::SQS::Queue').find(([id]) => id.startsWith('DeadLetters'))!;
    const keepDays = dlq[1].Properties.MessageRetentionPeriod / 86400;
    const rules = bucket.Properties.LifecycleConfiguration.Rules;
    const rule = rules.find((r: { Prefix?: string }) => r.Prefix === 'dead-letters/');
    expect(rule.Status).toBe('Enabled');
    expect(rule.ExpirationInDays).toBeGreaterThan(keepDays);
    // A claim-checked value outlives every copy of its message: the buffer's, then the DLQ's.
    const claims = rules.find((r: { Prefix?: string }) => r.Prefix === 'claims/');
    const bufferDays = variant.buffer === 'sqs'
      ? resources(s.json, 'AWS::SQS::Queue').find(([id]) => id.startsWith('Buffer'))![1].Properties.MessageRetentionPeriod / 86400
      : resources(s.json, 'AWS::Kinesis::Stream')[0][1].Properties.RetentionPeriodHours / 24;
    expect(claims.ExpirationInDays).toBeGreaterThan(bufferDays + keepDays);
    const drain = s.json.Resources[functionId(s.json, 'Drain')].Properties;
    expect(drain.Environment.Variables.SPILLWAY_DLQ_BUCKET).toEqual({ Ref: bucketId });
    const policies = resources(s.json, 'AWS::IAM::Policy').filter(([, p]) =>
      JSON.stringify(p.Properties.Roles).includes(drain.Role['Fn::GetAtt'][0]),
    );
    const puts = policies.flatMap(([, p]) => p.Properties.PolicyDocument.Statement)
      .filter((st: { Action: string | string[] }) => [st.Action].flat().includes('s3:PutObject'));
    expect(puts).toHaveLength(2);
    expect(JSON.stringify(puts.map((p: { Resource: unknown }) => p.Resource))).toContain('/dead-letters/*');
    expect(JSON.stringify(puts.map((p: { Resource: unknown }) => p.Resource))).toContain('/claims/*');
  });

  test('values too large for the buffer: ingest-api writes them under claims/, the drain reads and removes them', () => {
    const [bucketId] = resources(s.json, 'AWS::S3::Bucket')[0];
    const statements = (fn: string) => {
      const props = s.json.Resources[functionId(s.json, fn)].Properties;
      expect(props.Environment.Variables.SPILLWAY_CLAIM_BUCKET).toEqual({ Ref: bucketId });
      return resources(s.json, 'AWS::IAM::Policy')
        .filter(([, p]) => JSON.stringify(p.Properties.Roles).includes(props.Role['Fn::GetAtt'][0]))
        .flatMap(([, p]) => p.Properties.PolicyDocument.Statement);
    };
    const on = (st: { Resource: unknown }[], action: string) =>
      st.filter((x: any) => [x.Action].flat().includes(action)).map((x) => JSON.stringify(x.Resource));
    const drain = statements('Drain');
    expect(on(drain, 's3:GetObject*').join()).toContain('/claims/*');
    expect(on(drain, 's3:GetObject*').join()).not.toContain('dead-letters');
    expect(on(drain, 's3:PutObject').join()).toContain('/claims/*');
    expect(on(drain, 's3:DeleteObject*')).toHaveLength(0);
    if (variant.ingest === 'lambda') {
      const ingest = statements('Ingest');
      expect(on(ingest, 's3:PutObject')).toHaveLength(1);
      expect(on(ingest, 's3:PutObject')[0]).toContain('/claims/*');
      expect(on(ingest, 's3:DeleteObject*')).toHaveLength(0);
      expect(on(ingest, 's3:GetObject*')).toHaveLength(0);
    }
  });

  test('the drain mapping counts its events, and dropped and failed-invoke events raise alarms', () => {
    const [mappingId, mapping] = resources(s.json, 'AWS::Lambda::EventSourceMapping').find(([, m]) =>
      JSON.stringify(m.Properties.FunctionName).includes(functionId(s.json, 'Drain')),
    )!;
    expect(mapping.Properties.MetricsConfig).toEqual({ Metrics: ['EventCount'] });
    const alarms = resources(s.json, 'AWS::CloudWatch::Alarm').map(([, a]) => a.Properties);
    for (const name of ['DroppedEventCount', 'FailedInvokeEventCount']) {
      const alarm = alarms.find((a) => a.MetricName === name);
      expect(alarm).toBeDefined();
      expect(alarm.Namespace).toBe('AWS/Lambda');
      expect(alarm.Dimensions).toEqual([{ Name: 'EventSourceMappingUUID', Value: { Ref: mappingId } }]);
      expect(alarm.Threshold).toBe(0);
      expect(alarm.AlarmActions).toHaveLength(1);
    }
    const body = JSON.stringify(resources(s.json, 'AWS::CloudWatch::Dashboard')[0][1].Properties.DashboardBody);
    expect(body).toContain('Drain mapping events');
    expect(body).toContain('DroppedEventCount');
  });

  test('the alarms exist', () => {
    const metrics = resources(s.json, 'AWS::CloudWatch::Alarm').map(([, a]) => a.Properties.MetricName);
    expect(metrics).toEqual(expect.arrayContaining(['ApproximateNumberOfMessagesVisible', 'Errors', 'Throttles', '5XXError']));
    expect(metrics).toContain(variant.buffer === 'sqs' ? 'ApproximateAgeOfOldestMessage' : 'GetRecords.IteratorAgeMilliseconds');
    s.template.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
  });

  test('the API is throttled, access-logged and authorised', () => {
    s.template.hasResourceProperties('AWS::ApiGateway::Stage', {
      AccessLogSetting: Match.objectLike({ DestinationArn: Match.anyValue() }),
      TracingEnabled: true,
      MethodSettings: Match.arrayWith([Match.objectLike({ ThrottlingRateLimit: 1000, ThrottlingBurstLimit: 2000 })]),
    });
    for (const [, m] of resources(s.json, 'AWS::ApiGateway::Method')) {
      if (m.Properties.HttpMethod === 'OPTIONS') continue;
      if (variant.auth === 'apikey') {
        expect(m.Properties.ApiKeyRequired).toBe(true);
      } else {
        expect(m.Properties.AuthorizationType).toBe('AWS_IAM');
      }
    }
    if (variant.auth === 'apikey') s.template.resourceCountIs('AWS::ApiGateway::UsagePlan', 1);
  });

  test('cdk-nag AwsSolutions: no error or warning is left unexplained', () => {
    const nag = Match.stringLikeRegexp('AwsSolutions-.*');
    const errors = Annotations.fromStack(s.stack).findError('*', nag);
    const warnings = Annotations.fromStack(s.stack).findWarning('*', nag);
    expect(errors.map((e) => `${e.id}: ${e.entry.data}`)).toEqual([]);
    expect(warnings.map((w) => `${w.id}: ${w.entry.data}`)).toEqual([]);
  });

  test('cfn-lint finds nothing in the template', () => {
    const file = path.join(
      scratch,
      `${variant.buffer}-${variant.ingest}-${variant.auth ?? 'iam'}-${variant.drainCapacityProvider ?? 'lambda'}.template.json`,
    );
    fs.writeFileSync(file, JSON.stringify(s.json, null, 1));
    const lint = spawnSync(CFN_LINT, ['--config-file', path.join(__dirname, '..', '.cfnlintrc.yaml'), '--', file], {
      encoding: 'utf8',
    });
    expect(lint.error).toBeUndefined();
    expect(`${lint.stdout}${lint.stderr}`).toBe('');
    expect(lint.status).toBe(0);
  });

  test('the direct integration answers a refused write by its cause: throttled 429, too large 413, else 503', () => {
    if (variant.ingest !== 'direct') return;
    const method = resources(s.json, 'AWS::ApiGateway::Method').find(([, m]) => m.Properties.Integration?.RequestTemplates);
    const responses = method![1].Properties.Integration.IntegrationResponses;
    const refused = responses.find((r: any) => r.SelectionPattern === '4\\d{2}');
    expect(refused.ResponseParameters['method.response.header.Retry-After']).toBe("'1'");
    const declared = method![1].Properties.MethodResponses.map((r: any) => r.StatusCode);
    expect(declared).toEqual(expect.arrayContaining(['202', '413', '429', '503']));
    const errors: [string, number][] = [
      // SQS (query protocol, XML)
      ['<ErrorResponse><Error><Type>Sender</Type><Code>AWS.SimpleQueueService.RequestThrottled</Code><Message>Rate exceeded</Message></Error></ErrorResponse>', 429],
      ['<ErrorResponse><Error><Type>Sender</Type><Code>KMS.ThrottlingException</Code></Error></ErrorResponse>', 429],
      ['<ErrorResponse><Error><Type>Sender</Type><Code>InvalidParameterValue</Code><Message>One or more parameters are invalid. Reason: Message must be shorter than 262144 bytes.</Message></Error></ErrorResponse>', 413],
      ['<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>Access to the resource is denied.</Message></Error></ErrorResponse>', 503],
      // Kinesis (JSON)
      ['{"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded for shard shardId-000000000000"}', 429],
      ['{"__type":"ValidationException","message":"1 validation error detected: Value at \'data\' failed to satisfy constraint: Member must have length less than or equal to 1048576"}', 413],
      ['{"__type":"ResourceNotFoundException","message":"Stream s not found"}', 503],
    ];
    const rendered = renderVtl(
      refused.ResponseTemplates['application/json'],
      errors.map(([body]) => ({ body })),
      true,
    ) as unknown as { text: string; status: number }[];
    rendered.forEach((r, i) => {
      expect([errors[i][0], r.status]).toEqual([errors[i][0], errors[i][1]]);
      const answer = JSON.parse(r.text);
      expect(answer.error_code).toBe(errors[i][1] * 100);
      expect(answer.message).toContain('nothing was accepted');
    });
  });

  test('the direct integration writes envelopes the drain decodes', () => {
    if (variant.ingest !== 'direct') return;
    const method = resources(s.json, 'AWS::ApiGateway::Method').find(([, m]) => m.Properties.Integration?.RequestTemplates);
    expect(method).toBeDefined();
    const integration = method![1].Properties.Integration;
    // binaryMediaTypes */*: API Gateway hands every body to the template base64-encoded
    // (CONVERT_TO_TEXT), whatever its type; the envelope must carry the very bytes sent.
    expect(s.json.Resources[resources(s.json, 'AWS::ApiGateway::RestApi')[0][0]].Properties.BinaryMediaTypes).toEqual(['*/*']);
    const samples = [
      { raw: Buffer.from('plain text with \'quotes\' "double" ü 😀'), headers: { 'Kafka-Key': 'customer-42' }, type: 'text/plain' },
      { raw: Buffer.from('{"total":12,"items":[1,2]}'), headers: {}, type: 'application/json' },
      { raw: Buffer.from(''), headers: {}, type: 'application/json' },
      { raw: Buffer.from([0, 1, 2, 255, 254]), headers: {}, type: 'application/octet-stream' },
      // A protobuf message (field 1 = 150, then a length-delimited field with a 0xFF byte).
      { raw: Buffer.from([0x08, 0x96, 0x01, 0x12, 0x02, 0xff, 0x00]), headers: {}, type: 'application/x-protobuf' },
      // W3C trace context: carried when safe inside the envelope, left out otherwise (the drain
      // then derives a trace from the id); a forged value cannot break out of its string.
      { raw: Buffer.from('traced'), headers: { traceparent: TRACEPARENT, tracestate: 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE' }, type: 'text/plain' },
      { raw: Buffer.from('forged'), headers: { traceparent: '00-x","topic":"evil', tracestate: 'a=b' }, type: 'text/plain' },
      { raw: Buffer.from('forged state'), headers: { traceparent: TRACEPARENT, tracestate: 'a=b","topic":"evil' }, type: 'text/plain' },
      { raw: Buffer.from('capitalised'), headers: { Traceparent: TRACEPARENT }, type: 'text/plain' },
    ];
    const bodies: string[] = [];
    samples.forEach((sample, i) => {
      const template = resolveJoin(integration.RequestTemplates[sample.type]);
      const request = { body: sample.raw.toString('base64'), headers: sample.headers, requestId: `req-${i}`, requestTimeEpoch: 1764211200000 + i };
      const [rendered] = renderVtl(template, [request]);
      if (variant.buffer === 'sqs') {
        const form = new URLSearchParams(rendered);
        expect(rendered.startsWith('Action=SendMessage&')).toBe(true);
        bodies.push(form.get('MessageBody')!);
      } else {
        const put = JSON.parse(rendered);
        expect(put.StreamName).toBe('<stream>');
        expect(put.PartitionKey).toBe(`req-${i}`);
        bodies.push(Buffer.from(put.Data, 'base64').toString('utf8'));
      }
    });
    const decoded = decodeEnvelopes(bodies);
    samples.forEach((sample, i) => {
      const value = sample.raw;
      expect(decoded[i]).toEqual({
        id: `req-${i}`,
        topic: 'spillway-events',
        key_b64: sample.headers['Kafka-Key' as keyof typeof sample.headers]
          ? Buffer.from('customer-42').toString('base64')
          : null,
        value_b64: value.toString('base64'),
        received_at_ms: 1764211200000 + i,
        traceparent: i === 5 || i === 7 || i === 8 ? TRACEPARENT : null,
        tracestate: i === 5 ? 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE' : null,
      });
    });
    expect(integration.IntegrationResponses[0].ResponseTemplates['application/json']).toBe(
      '{"id":"$context.requestId","topic":"spillway-events"}',
    );
  });
});

test('pollers=MIN:MAX puts the SQS mapping in provisioned mode, without a maximum concurrency', () => {
  const mapping = (json: any) =>
    resources(json, 'AWS::Lambda::EventSourceMapping').find(([, m]) =>
      JSON.stringify(m.Properties.FunctionName).includes(functionId(json, 'Drain')),
    )![1].Properties;
  const provisioned = mapping(synth({ pollers: '2:50' }).json);
  expect(provisioned.ProvisionedPollerConfig).toEqual({ MinimumPollers: 2, MaximumPollers: 50 });
  expect(provisioned.ScalingConfig).toBeUndefined();
  const onDemand = mapping(synth({}).json);
  expect(onDemand.ProvisionedPollerConfig).toBeUndefined();
  expect(onDemand.ScalingConfig).toEqual({ MaximumConcurrency: 20 });
  expect(() => synth({ pollers: '2:50', drainMaxConcurrency: '40' })).toThrow(/choose one/);
  expect(() => synth({ pollers: '1:50' })).toThrow(/MIN from 2 to 200/);
  expect(() => synth({ pollers: '60:50' })).toThrow(/MAX from MIN to 2000/);
  expect(() => synth({ pollers: 'many' })).toThrow(/expected MIN:MAX/);
  expect(() => synth({ buffer: 'kinesis', pollers: '2:50' })).toThrow(/SQS mapping/);
});

test('drainCapacityProvider runs the drain on Lambda Managed Instances: concurrent invocations per environment, published, in the provider\'s network', () => {
  const drainOf = (json: any) => json.Resources[functionId(json, 'Drain')].Properties;
  const created = synth({ drainCapacityProvider: 'create' }).json;
  const [[providerId, provider]] = resources(created, 'AWS::Lambda::CapacityProvider');
  const clients = resources(created, 'AWS::EC2::SecurityGroup').find(([id]) => id.startsWith('KafkaClients'))![0];
  expect(provider.Properties.VpcConfig.SecurityGroupIds).toEqual([{ 'Fn::GetAtt': [clients, 'GroupId'] }]);
  const privateSubnets = resources(created, 'AWS::EC2::Subnet')
    .filter(([id]) => id.includes('private'))
    .map(([id]) => ({ Ref: id }));
  expect(privateSubnets).toHaveLength(2);
  expect(provider.Properties.VpcConfig.SubnetIds).toEqual(privateSubnets);
  expect(provider.Properties.InstanceRequirements.Architectures).toEqual(['arm64']);
  expect(provider.Properties.PermissionsConfig.CapacityProviderOperatorRoleArn).toBeDefined();
  const drain = drainOf(created);
  expect(drain.CapacityProviderConfig).toEqual({
    LambdaManagedInstancesCapacityProviderConfig: {
      CapacityProviderArn: { 'Fn::GetAtt': [providerId, 'Arn'] },
      PerExecutionEnvironmentMaxConcurrency: 10,
      ExecutionEnvironmentMemoryGiBPerVCpu: 2,
    },
  });
  // Only published versions run there; $LATEST.PUBLISHED is what the mapping's unqualified ARN invokes.
  expect(drain.PublishToLatestPublished).toBe(true);
  // Environments bounded by the connection budget: 800 × 3 connections = 80 % of 3,000.
  expect(drain.FunctionScalingConfig).toEqual({ MinExecutionEnvironments: 3, MaxExecutionEnvironments: 800 });
  expect(drain.MemorySize).toBe(2048);
  expect(drain.VpcConfig).toBeUndefined();
  // The other functions stay on Lambda's default compute, in the VPC.
  expect(created.Resources[functionId(created, 'Consumer')].Properties.CapacityProviderConfig).toBeUndefined();
  expect(created.Resources[functionId(created, 'Consumer')].Properties.VpcConfig).toBeDefined();

  const arn = 'arn:aws:lambda:us-east-1:123456789012:capacity-provider:msk-drains';
  const theirs = synth({
    drainCapacityProvider: arn,
    drainCapacityProviderSecurityGroupId: 'sg-0123456789abcdef0',
    drainConcurrencyPerEnvironment: '64',
    drainMemoryMb: '4096',
  }).json;
  // The cluster lets the operator's provider in on MSK IAM's port.
  const ingress = resources(theirs, 'AWS::EC2::SecurityGroup')
    .filter(([id]) => id.startsWith('ClusterSecurityGroup'))
    .flatMap(([, sg]) => sg.Properties.SecurityGroupIngress ?? []);
  expect(ingress).toContainEqual(expect.objectContaining({ SourceSecurityGroupId: 'sg-0123456789abcdef0', FromPort: 9098, ToPort: 9098 }));
  expect(() => synth({ drainCapacityProvider: arn })).toThrow(/also set drainCapacityProviderSecurityGroupId/);
  expect(() => synth({ drainCapacityProvider: 'create', drainCapacityProviderSecurityGroupId: 'sg-0123456789abcdef0' })).toThrow(
    /for a capacity provider given by ARN/,
  );
  expect(resources(theirs, 'AWS::Lambda::CapacityProvider')).toHaveLength(0);
  expect(drainOf(theirs).CapacityProviderConfig.LambdaManagedInstancesCapacityProviderConfig).toMatchObject({
    CapacityProviderArn: arn,
    PerExecutionEnvironmentMaxConcurrency: 64,
  });
  expect(drainOf(theirs).MemorySize).toBe(4096);
  // With both: provisioned pollers feed the environments.
  const both = synth({ drainCapacityProvider: 'create', pollers: '2:20' }).json;
  expect(drainOf(both).CapacityProviderConfig).toBeDefined();

  const plain = drainOf(synth({}).json);
  expect(plain.CapacityProviderConfig).toBeUndefined();
  expect(plain.PublishToLatestPublished).toBeUndefined();
  expect(plain.VpcConfig).toBeDefined();
  expect(() => synth({ drainConcurrencyPerEnvironment: '10' })).toThrow(/without drainCapacityProvider/);
  expect(() => synth({ drainCapacityProvider: 'mine' })).toThrow(/expected create or arn:aws:lambda/);
  expect(() => synth({ drainCapacityProvider: 'create', drainMemoryMb: '1024' })).toThrow(/at least 2048 MB/);
  expect(() => synth({ drainCapacityProvider: 'create', drainConcurrencyPerEnvironment: '1601' })).toThrow(
    /drainConcurrencyPerEnvironment=1601: expected a whole number from 1 to 1600/,
  );
});

test('tenantFrom reaches ingest-api as SPILLWAY_TENANT_FROM and is checked', () => {
  const { json } = synth({ auth: 'apikey', tenantFrom: 'api-key' });
  expect(json.Resources[functionId(json, 'Ingest')].Properties.Environment.Variables.SPILLWAY_TENANT_FROM).toBe('api-key');
  const header = synth({ tenantFrom: 'header:X-Tenant' }).json;
  expect(header.Resources[functionId(header, 'Ingest')].Properties.Environment.Variables.SPILLWAY_TENANT_FROM).toBe('header:X-Tenant');
  expect(() => synth({ tenantFrom: 'api-key' })).toThrow(/auth=apikey/);
  expect(() => synth({ tenantFrom: 'header:bad name' })).toThrow(/tenantFrom=header:bad name/);
  expect(() => synth({ buffer: 'kinesis', tenantFrom: 'header:X-Tenant' })).toThrow(/fair-queue/);
});

test('retention follows the retry budget: a week of retries keeps a week and a day', () => {
  const { json } = synth({ buffer: 'kinesis', kinesisMaxRecordAgeSecs: '604800', kinesisReplayWindowHours: '24' });
  const [[, stream]] = resources(json, 'AWS::Kinesis::Stream');
  expect(stream.Properties.RetentionPeriodHours).toBe(168 + 24);
  expect(() => synth({ buffer: 'kinesis', kinesisMaxRecordAgeSecs: '604800', kinesisReplayWindowHours: '8700' })).toThrow(
    'Kinesis keeps them at most 8760 h',
  );
});

// Issue 15 item 13: one record the consumer cannot take must not stop its partition.
test('the consumer mapping: on-demand alarms on skipped unreadable records; provisioned pollers add bounded retries, bisection and an on-failure queue', () => {
  const consumerMapping = (json: any) => {
    const consumer = functionId(json, 'Consumer');
    return resources(json, 'AWS::Lambda::EventSourceMapping').find(([, r]) => r.Properties.FunctionName?.Ref === consumer)![1]
      .Properties;
  };
  const onDemand = synth({});
  const plain = consumerMapping(onDemand.json);
  expect(plain.ProvisionedPollerConfig).toBeUndefined();
  const unreadable = resources(onDemand.json, 'AWS::CloudWatch::Alarm').find(([id]) => id.startsWith('ConsumerUnreadable'));
  expect(unreadable![1].Properties.MetricName).toBe('Unreadable');
  expect(unreadable![1].Properties.Namespace).toBe('spillway');

  const provisioned = consumerMapping(synth({ consumerPollers: '2' }).json);
  expect(provisioned.ProvisionedPollerConfig).toEqual({ MinimumPollers: 2, MaximumPollers: 8 });
  expect(provisioned.MaximumRetryAttempts).toBe(3);
  expect(provisioned.BisectBatchOnFunctionError).toBe(true);
  expect(provisioned.DestinationConfig.OnFailure.Destination).toBeDefined();
});

test('bad context names the option and what it accepts', () => {
  expect(() => synth({ buffer: 'kafka' })).toThrow('context buffer=kafka: expected one of sqs, kinesis');
  // Issue 14 item 3: a timeout the deadline margin leaves no room in is refused at synth.
  expect(() => synth({ drainTimeoutSecs: '5' })).toThrow('drainTimeoutSecs=5 with drainDeadlineMarginSecs=5');
  expect(() => synth({ drainTimeoutSecs: '10', drainDeadlineMarginSecs: '6' })).toThrow('at least 12 s');
  expect(() => synth({ topics: 'ok,not ok' })).toThrow("('not ok' is not)");
  expect(() => synth({ drainBatchSize: '100', drainBatchingWindowSecs: '0' })).toThrow('needs drainBatchingWindowSecs of at least 1');
  expect(() => synth({ clusterArn: 'arn:aws:kafka:us-east-1:123456789012:cluster/c/u' })).toThrow(
    'also set vpcId, privateSubnetIds, availabilityZones, clusterSecurityGroupId',
  );
});

test('an existing cluster by ARN: no cluster or VPC is created, its security group lets the functions in', () => {
  const s = synth({
    clusterArn: 'arn:aws:kafka:us-east-1:123456789012:cluster/prod/1111-2222',
    vpcId: 'vpc-0abc',
    privateSubnetIds: 'subnet-1,subnet-2',
    availabilityZones: 'us-east-1a,us-east-1b',
    clusterSecurityGroupId: 'sg-0cluster',
  });
  s.template.resourceCountIs('AWS::MSK::ServerlessCluster', 0);
  s.template.resourceCountIs('AWS::EC2::VPC', 0);
  s.template.hasResourceProperties('AWS::EC2::SecurityGroupIngress', { GroupId: 'sg-0cluster', FromPort: 9098, ToPort: 9098 });
  s.template.hasResourceProperties('AWS::IAM::Policy', {
    PolicyDocument: Match.objectLike({
      Statement: Match.arrayWith([
        Match.objectLike({
          Action: ['kafka-cluster:WriteData', 'kafka-cluster:DescribeTopic'],
          Resource: Match.anyValue(),
        }),
      ]),
    }),
  });
});

/** A CloudFormation string: plain, or Fn::Join of strings and Refs (a Ref becomes `<stream>`). */
function resolveJoin(value: any): string {
  if (typeof value === 'string') return value;
  if (value['Fn::Join']) {
    const [sep, parts] = value['Fn::Join'];
    return parts.map(resolveJoin).join(sep);
  }
  if (value.Ref) return '<stream>';
  throw new Error(`cannot resolve ${JSON.stringify(value)}`);
}

const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

function renderVtl(template: string, requests: object[], overrides = false): string[] {
  const run = spawnSync(PYTHON, [path.join(__dirname, 'render_vtl.py')], {
    input: JSON.stringify({ template, requests, overrides }),
    encoding: 'utf8',
  });
  if (run.status !== 0) throw new Error(`render_vtl.py: ${run.error ?? run.stderr}`);
  return JSON.parse(run.stdout);
}

function decodeEnvelopes(bodies: string[]): any[] {
  const run = spawnSync('cargo', ['run', '-q', '-p', 'spillway-core', '--example', 'decode-envelopes'], {
    cwd: REPO,
    input: bodies.join('\n') + '\n',
    encoding: 'utf8',
  });
  if (run.status !== 0) throw new Error(`decode-envelopes: ${run.error ?? run.stderr}`);
  return run.stdout.trim().split('\n').map((l) => JSON.parse(l));
}
