// The whole pipeline in one stack: network and MSK Serverless (IAM), the topic custom resource,
// the buffer (SQS + DLQ, or Kinesis + on-failure queue), the API, the drain, the consumer, and the
// alarms and dashboard.

import * as fs from 'fs';
import * as path from 'path';
import * as cdk from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kinesis from 'aws-cdk-lib/aws-kinesis';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sources from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as msk from 'aws-cdk-lib/aws-msk';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as cr from 'aws-cdk-lib/custom-resources';
import { NagSuppressions } from 'cdk-nag';
import { Construct } from 'constructs';
import { ingestTimeoutSecs, Settings, streamRetentionHours } from './settings';
import { acceptedTemplate, refusedTemplate, kinesisTemplate, sqsTemplate } from './templates';

/** The Lambda binaries (cargo lambda's output folders). */
/**
 * The content types the direct integration takes (a mapping template per type; API Gateway refuses
 * others with 415). The ingest-api integration takes every type.
 */
export const DIRECT_CONTENT_TYPES = [
  'application/json',
  'text/plain',
  'application/octet-stream',
  'application/x-protobuf',
  'application/protobuf',
  'application/avro',
  'application/x-ndjson',
  'application/xml',
  'text/csv',
];

export const BINARIES = ['ingest-api', 'buffer-drain', 'msk-consumer', 'topic-resource'] as const;
export type Binary = (typeof BINARIES)[number];

/** The consumer group of the msk-consumer function. */
export const CONSUMER_GROUP = 'spillway-consumer';

export interface SpillwayStackProps extends cdk.StackProps {
  readonly settings: Settings;
}

export class SpillwayStack extends cdk.Stack {
  readonly settings: Settings;
  private readonly functions: lambda.Function[] = [];

  constructor(scope: Construct, id: string, props: SpillwayStackProps) {
    super(scope, id, props);
    const s = (this.settings = props.settings);
    checkAssets(s.lambdaAssets);

    const network = this.network();
    const cluster = this.cluster(network);
    const topic = this.topic(network, cluster);
    const buffer = this.buffer();
    const drain = this.drain(network, cluster, topic, buffer);
    const consumer = this.consumer(network, cluster, topic);
    const api = this.api(buffer);
    this.observability(buffer, drain, consumer, api);

    new cdk.CfnOutput(this, 'ApiUrl', { value: api.url, description: 'POST /v1/topics/{topic}/messages' });
    new cdk.CfnOutput(this, 'BootstrapBrokers', { value: topic.bootstrap, description: 'MSK IAM bootstrap string' });
    new cdk.CfnOutput(this, 'DrainFunction', { value: drain.functionName });
    new cdk.CfnOutput(this, 'ConsumerLogGroup', { value: consumer.logGroup.logGroupName });
    if (buffer.queue) new cdk.CfnOutput(this, 'QueueUrl', { value: buffer.queue.queueUrl });
    if (buffer.stream) new cdk.CfnOutput(this, 'StreamName', { value: buffer.stream.streamName });
    new cdk.CfnOutput(this, 'DeadLetterQueueUrl', { value: buffer.deadLetters.queueUrl });
    new cdk.CfnOutput(this, 'DeadLetterBucket', {
      value: buffer.deadLetterObjects.bucketName,
      description: 'dead letters too large for the DLQ (the DLQ message is a claim check naming the object)',
    });
    this.suppressions();
  }

  // ---- network and cluster -------------------------------------------------------------------

  private network(): Network {
    const s = this.settings;
    let vpc: ec2.IVpc;
    if (s.existingCluster) {
      const e = s.existingCluster;
      vpc = ec2.Vpc.fromVpcAttributes(this, 'Vpc', {
        vpcId: e.vpcId,
        availabilityZones: e.availabilityZones,
        privateSubnetIds: e.privateSubnetIds,
      });
    } else {
      const flowLogs = new logs.LogGroup(this, 'VpcFlowLogs', {
        retention: s.logRetentionDays as logs.RetentionDays,
        removalPolicy: cdk.RemovalPolicy.DESTROY,
      });
      vpc = new ec2.Vpc(this, 'Vpc', {
        maxAzs: s.maxAzs,
        natGateways: 1,
        subnetConfiguration: [
          { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
          { name: 'private', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 22 },
        ],
        flowLogs: {
          all: { destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogs), trafficType: ec2.FlowLogTrafficType.ALL },
        },
      });
    }
    const clients = new ec2.SecurityGroup(this, 'KafkaClients', {
      vpc,
      description: 'spillway functions that talk to MSK',
      allowAllOutbound: true,
    });
    const subnets: ec2.SubnetSelection = s.existingCluster
      ? { subnets: vpc.privateSubnets }
      : { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS };
    return { vpc, clients, subnets };
  }

  private cluster(network: Network): Cluster {
    const s = this.settings;
    let arn: string;
    if (s.existingCluster) {
      arn = s.existingCluster.clusterArn;
      const sg = ec2.SecurityGroup.fromSecurityGroupId(this, 'ClusterSecurityGroup', s.existingCluster.clusterSecurityGroupId, {
        mutable: true,
      });
      sg.addIngressRule(network.clients, ec2.Port.tcp(9098), 'MSK IAM from spillway functions');
    } else {
      const sg = new ec2.SecurityGroup(this, 'ClusterSecurityGroup', {
        vpc: network.vpc,
        description: 'MSK Serverless: IAM listener for spillway functions',
        allowAllOutbound: false,
      });
      sg.addIngressRule(network.clients, ec2.Port.tcp(9098), 'MSK IAM from spillway functions');
      const cluster = new msk.CfnServerlessCluster(this, 'Cluster', {
        clusterName: `${this.stackName.toLowerCase()}-msk`.slice(0, 64),
        clientAuthentication: { sasl: { iam: { enabled: true } } },
        vpcConfigs: [
          {
            subnetIds: network.vpc.selectSubnets(network.subnets).subnetIds,
            securityGroups: [sg.securityGroupId],
          },
        ],
      });
      arn = cluster.attrArn;
    }
    // arn:aws:kafka:<region>:<account>:cluster/<name>/<uuid>
    const parts = cdk.Fn.split('/', arn);
    const name = cdk.Fn.select(1, parts);
    const uuid = cdk.Fn.select(2, parts);
    const resource = (kind: string, rest: string) =>
      cdk.Stack.of(this).formatArn({ service: 'kafka', resource: kind, resourceName: `${name}/${uuid}/${rest}` });
    return {
      arn,
      topicArn: (topic: string) => resource('topic', topic),
      groupArn: (group: string) => resource('group', group),
    };
  }

  // ---- the topic custom resource --------------------------------------------------------------

  private topic(network: Network, cluster: Cluster): Topic {
    const s = this.settings;
    const fn = this.rustFunction('TopicResource', 'topic-resource', network, {
      description: 'spillway: creates the topic on MSK over IAM (custom resource)',
      timeout: cdk.Duration.minutes(2),
      environment: { SPILLWAY_KAFKA_AUTH: 'iam' },
    });
    fn.addToRolePolicy(
      new iam.PolicyStatement({ actions: ['kafka:GetBootstrapBrokers', 'kafka-cluster:Connect'], resources: [cluster.arn] }),
    );
    const topicActions = ['kafka-cluster:CreateTopic', 'kafka-cluster:DescribeTopic', 'kafka-cluster:AlterTopic'];
    if (s.deleteTopicOnDestroy) topicActions.push('kafka-cluster:DeleteTopic');
    fn.addToRolePolicy(new iam.PolicyStatement({ actions: topicActions, resources: s.topics.map(cluster.topicArn) }));

    const providerLogs = this.logGroup('TopicProviderLogs');
    const provider = new cr.Provider(this, 'TopicProvider', {
      onEventHandler: fn,
      logGroup: providerLogs,
    });
    let bootstrap = '';
    let first: cdk.CustomResource | undefined;
    s.topics.forEach((name, i) => {
      const resource = new cdk.CustomResource(this, i === 0 ? 'Topic' : `Topic${i}`, {
        serviceToken: provider.serviceToken,
        resourceType: 'Custom::SpillwayTopic',
        properties: {
          Topic: name,
          Partitions: String(s.partitions),
          ClusterArn: cluster.arn,
          DeleteOnStackDelete: String(s.deleteTopicOnDestroy),
        },
      });
      if (i === 0) {
        bootstrap = resource.getAttString('BootstrapBrokers');
        first = resource;
      }
    });
    return { bootstrap, name: s.topics[0], resource: first! };
  }

  // ---- buffer ---------------------------------------------------------------------------------

  private buffer(): Buffer {
    const s = this.settings;
    const deadLetters = new sqs.Queue(this, 'DeadLetters', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: cdk.Duration.days(DLQ_RETENTION_DAYS),
    });
    // Dead letters too large for the DLQ (over 256 KiB with their attributes): the drain keeps
    // them here and the DLQ gets a claim check naming the object; replay reads them back and
    // removes the object. Objects outlive the longest a letter can stay in the DLQ.
    const deadLetterObjects = new s3.Bucket(this, 'DeadLetterObjects', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      lifecycleRules: [
        {
          expiration: cdk.Duration.days(DLQ_RETENTION_DAYS + 1),
          abortIncompleteMultipartUploadAfter: cdk.Duration.days(1),
        },
      ],
      removalPolicy: cdk.RemovalPolicy.RETAIN,
    });
    if (s.buffer === 'sqs') {
      const queue = new sqs.Queue(this, 'Buffer', {
        encryption: sqs.QueueEncryption.SQS_MANAGED,
        enforceSSL: true,
        // AWS: at least 6 × the function timeout for queues Lambda drains.
        visibilityTimeout: cdk.Duration.seconds(6 * s.drainTimeoutSecs),
        retentionPeriod: cdk.Duration.days(4),
        deadLetterQueue: { queue: deadLetters, maxReceiveCount: s.maxReceiveCount },
      });
      return { kind: 'sqs', queue, deadLetters, deadLetterObjects };
    }
    const stream = new kinesis.Stream(this, 'Buffer', {
      shardCount: s.kinesisShards,
      // Records the drain gives up on stay long enough to replay their on-failure pointers.
      retentionPeriod: cdk.Duration.hours(streamRetentionHours(s)),
      encryption: kinesis.StreamEncryption.MANAGED,
    });
    return { kind: 'kinesis', stream, deadLetters, deadLetterObjects };
  }

  // ---- functions ------------------------------------------------------------------------------

  private logGroup(id: string): logs.LogGroup {
    return new logs.LogGroup(this, id, {
      retention: this.settings.logRetentionDays as logs.RetentionDays,
      removalPolicy: cdk.RemovalPolicy.DESTROY,
    });
  }

  private rustFunction(
    id: string,
    binary: Binary,
    network: Network | undefined,
    props: Partial<lambda.FunctionProps>,
  ): lambda.Function {
    const fn = new lambda.Function(this, id, {
      runtime: lambda.Runtime.PROVIDED_AL2023,
      architecture: lambda.Architecture.ARM_64,
      handler: 'bootstrap',
      code: lambda.Code.fromAsset(path.join(this.settings.lambdaAssets, binary)),
      memorySize: 256,
      tracing: lambda.Tracing.ACTIVE,
      logGroup: this.logGroup(`${id}Logs`),
      loggingFormat: lambda.LoggingFormat.JSON,
      ...(network ? { vpc: network.vpc, vpcSubnets: network.subnets, securityGroups: [network.clients] } : {}),
      ...props,
      environment: { RUST_LOG: 'info', ...(props.environment ?? {}) },
    });
    this.functions.push(fn);
    return fn;
  }

  private drain(network: Network, cluster: Cluster, topic: Topic, buffer: Buffer): lambda.Function {
    const s = this.settings;
    const fn = this.rustFunction('Drain', 'buffer-drain', network, {
      description: 'spillway: buffer → MSK, rate-limited, partial-batch failures',
      timeout: cdk.Duration.seconds(s.drainTimeoutSecs),
      memorySize: s.drainMemoryMb,
      environment: {
        SPILLWAY_SOURCE: buffer.kind,
        SPILLWAY_KAFKA_BOOTSTRAP: topic.bootstrap,
        SPILLWAY_KAFKA_AUTH: 'iam',
        SPILLWAY_MAX_CONNECTS_PER_SEC: String(s.maxConnectsPerSec),
        SPILLWAY_DEADLINE_MARGIN: `${s.drainDeadlineMarginSecs}s`,
        SPILLWAY_DLQ_URL: buffer.deadLetters.queueUrl,
        SPILLWAY_DLQ_BUCKET: buffer.deadLetterObjects.bucketName,
      },
    });
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
    if (buffer.queue) {
      fn.addEventSource(
        new sources.SqsEventSource(buffer.queue, {
          batchSize: s.drainBatchSize,
          maxBatchingWindow: cdk.Duration.seconds(s.drainBatchingWindowSecs),
          maxConcurrency: s.drainMaxConcurrency,
          reportBatchItemFailures: true,
        }),
      );
    } else if (buffer.stream) {
      fn.addEventSource(
        new sources.KinesisEventSource(buffer.stream, {
          startingPosition: lambda.StartingPosition.TRIM_HORIZON,
          batchSize: s.drainBatchSize,
          maxBatchingWindow: cdk.Duration.seconds(s.drainBatchingWindowSecs),
          bisectBatchOnError: true,
          retryAttempts: s.kinesisMaxRetries,
          maxRecordAge: cdk.Duration.seconds(s.kinesisMaxRecordAgeSecs),
          onFailure: new sources.SqsDlq(buffer.deadLetters),
          reportBatchItemFailures: true,
        }),
      );
    }
    return fn;
  }

  private consumer(network: Network, cluster: Cluster, topic: Topic): lambda.Function {
    const fn = this.rustFunction('Consumer', 'msk-consumer', network, {
      description: 'spillway: MSK consumer (logs each record’s id and latency)',
      timeout: cdk.Duration.seconds(60),
      environment: { SPILLWAY_CONSUMER_GROUP: CONSUMER_GROUP },
    });
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['kafka-cluster:Connect', 'kafka-cluster:DescribeClusterDynamicConfiguration'],
        resources: [cluster.arn],
      }),
    );
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['kafka-cluster:DescribeTopic', 'kafka-cluster:ReadData'],
        resources: [cluster.topicArn(topic.name)],
      }),
    );
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['kafka-cluster:AlterGroup', 'kafka-cluster:DescribeGroup'],
        resources: [cluster.groupArn(CONSUMER_GROUP)],
      }),
    );
    // All partitions of the topic: the MSK event source polls every partition. Mapped directly
    // rather than with ManagedKafkaEventSource, which attaches the broad AWSLambdaMSKExecutionRole;
    // the poller needs only these, plus the network interface rights of the VPC role.
    // Records the handler cannot take stop their partition only until they are set aside: in
    // provisioned mode (consumerPollers ≥ 1, billed per poller) the mapping retries a failed batch
    // consumerRetryAttempts times, halving it to find the record, then sends that record's
    // position to a queue. On-demand mappings have none of these controls: there the consumer
    // itself skips and counts records the event carries unreadably (alarm ConsumerUnreadable),
    // and a handler failure retries until it succeeds.
    const s = this.settings;
    const provisioned =
      s.consumerPollers > 0
        ? {
            provisionedPollerConfig: {
              minimumPollers: s.consumerPollers,
              maximumPollers: Math.min(2000, 4 * s.consumerPollers),
            },
            retryAttempts: s.consumerRetryAttempts,
            bisectBatchOnError: true,
            onFailure: new sources.SqsDlq(
              new sqs.Queue(this, 'ConsumerFailures', {
                encryption: sqs.QueueEncryption.SQS_MANAGED,
                enforceSSL: true,
                retentionPeriod: cdk.Duration.days(14),
              }),
            ),
          }
        : {};
    fn.addEventSourceMapping('Msk', {
      eventSourceArn: cluster.arn,
      kafkaTopic: topic.name,
      kafkaConsumerGroupId: CONSUMER_GROUP,
      startingPosition: lambda.StartingPosition.TRIM_HORIZON,
      batchSize: 100,
      ...provisioned,
    });
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['kafka:DescribeClusterV2', 'kafka:GetBootstrapBrokers'],
        resources: [cluster.arn],
      }),
    );
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['ec2:DescribeVpcs', 'ec2:DescribeSubnets', 'ec2:DescribeSecurityGroups'],
        resources: ['*'],
      }),
    );
    // The event source mapping needs the topic to exist.
    fn.node.addDependency(topic.resource);
    return fn;
  }

  // ---- API ------------------------------------------------------------------------------------

  private api(buffer: Buffer): apigw.RestApi {
    const s = this.settings;
    const accessLogs = this.logGroup('ApiAccessLogs');
    const api = new apigw.RestApi(this, 'Api', {
      restApiName: `${this.stackName}-ingest`,
      description: 'spillway ingest: HTTP → buffer → MSK',
      cloudWatchRole: true,
      // Every body is bytes to spillway: API Gateway hands each one over base64-encoded, so no
      // payload (protobuf, images, Avro, text) is altered as text on the way.
      binaryMediaTypes: ['*/*'],
      deployOptions: {
        stageName: 'v1',
        throttlingRateLimit: s.throttleRateLimit,
        throttlingBurstLimit: s.throttleBurstLimit,
        accessLogDestination: new apigw.LogGroupLogDestination(accessLogs),
        accessLogFormat: apigw.AccessLogFormat.jsonWithStandardFields(),
        loggingLevel: apigw.MethodLoggingLevel.ERROR,
        dataTraceEnabled: false,
        tracingEnabled: true,
        metricsEnabled: true,
      },
      defaultMethodOptions: {
        authorizationType: s.auth === 'iam' ? apigw.AuthorizationType.IAM : apigw.AuthorizationType.NONE,
        apiKeyRequired: s.auth === 'apikey',
      },
    });
    if (s.ingest === 'lambda') {
      this.lambdaIngest(api, buffer);
    } else {
      this.directIngest(api, buffer);
    }
    if (s.auth === 'apikey') {
      const plan = api.addUsagePlan('UsagePlan', {
        throttle: { rateLimit: s.throttleRateLimit, burstLimit: s.throttleBurstLimit },
        quota: { limit: s.quotaPerDay, period: apigw.Period.DAY },
      });
      plan.addApiStage({ stage: api.deploymentStage });
      plan.addApiKey(api.addApiKey('ApiKey', { description: 'spillway producer key' }));
    }
    return api;
  }

  private lambdaIngest(api: apigw.RestApi, buffer: Buffer): void {
    const s = this.settings;
    const environment: Record<string, string> = {
      SPILLWAY_BUFFER: buffer.kind,
      SPILLWAY_TOPIC: s.topics[0],
      SPILLWAY_TOPICS: s.topics.join(','),
      SPILLWAY_BUFFER_RETRY_BUDGET: `${s.ingestRetryBudgetSecs}s`,
    };
    if (buffer.queue) environment.SPILLWAY_SQS_QUEUE_URL = buffer.queue.queueUrl;
    if (buffer.stream) environment.SPILLWAY_KINESIS_STREAM = buffer.stream.streamName;
    const fn = this.rustFunction('Ingest', 'ingest-api', undefined, {
      description: 'spillway ingest-api: validates and buffers messages',
      // Never cut off between writes: a 503 says "nothing was accepted" only when that is true.
      timeout: cdk.Duration.seconds(ingestTimeoutSecs(s)),
      environment,
    });
    if (buffer.queue) buffer.queue.grantSendMessages(fn);
    if (buffer.stream) buffer.stream.grantWrite(fn);
    api.root.addProxy({ defaultIntegration: new apigw.LambdaIntegration(fn), anyMethod: true });
  }

  private directIngest(api: apigw.RestApi, buffer: Buffer): void {
    const s = this.settings;
    const role = new iam.Role(this, 'DirectIntegrationRole', {
      assumedBy: new iam.ServicePrincipal('apigateway.amazonaws.com'),
      description: 'API Gateway writes to the spillway buffer',
    });
    const topics = api.root.addResource('v1').addResource('topics');
    for (const topic of s.topics) {
      const templates = (binary: boolean) =>
        buffer.queue ? sqsTemplate(topic, binary) : kinesisTemplate(topic, buffer.stream!.streamName, binary);
      // With binaryMediaTypes */*, every body reaches the template base64-encoded already.
      const requestTemplates = Object.fromEntries(DIRECT_CONTENT_TYPES.map((type) => [type, templates(true)]));
      const integrationResponses: apigw.IntegrationResponse[] = [
        { statusCode: '202', responseTemplates: { 'application/json': acceptedTemplate(topic) } },
        {
          // 429, 413 or 503 by what the refusal says (the template sets the status).
          selectionPattern: '4\\d{2}',
          statusCode: '503',
          responseParameters: { 'method.response.header.Retry-After': "'1'" },
          responseTemplates: { 'application/json': refusedTemplate() },
        },
        {
          selectionPattern: '5\\d{2}',
          statusCode: '503',
          responseParameters: { 'method.response.header.Retry-After': "'1'" },
          responseTemplates: { 'application/json': '{"error_code":50300,"message":"the buffer is unavailable; nothing was accepted: retry"}' },
        },
      ];
      const options: apigw.IntegrationOptions = {
        credentialsRole: role,
        passthroughBehavior: apigw.PassthroughBehavior.NEVER,
        contentHandling: apigw.ContentHandling.CONVERT_TO_TEXT,
        requestTemplates,
        integrationResponses,
        ...(buffer.queue
          ? { requestParameters: { 'integration.request.header.Content-Type': "'application/x-www-form-urlencoded'" } }
          : {}),
      };
      const integration = buffer.queue
        ? new apigw.AwsIntegration({
            service: 'sqs',
            path: `${this.account}/${buffer.queue.queueName}`,
            integrationHttpMethod: 'POST',
            options,
          })
        : new apigw.AwsIntegration({ service: 'kinesis', action: 'PutRecord', options });
      topics
        .addResource(topic)
        .addResource('messages')
        .addMethod('POST', integration, {
          methodResponses: [
            { statusCode: '202' },
            ...['413', '429', '503'].map((statusCode) => ({
              statusCode,
              responseParameters: { 'method.response.header.Retry-After': true },
            })),
          ],
        });
    }
    if (buffer.queue) buffer.queue.grantSendMessages(role);
    if (buffer.stream) buffer.stream.grantWrite(role);
  }

  // ---- observability --------------------------------------------------------------------------

  private alarmKey(): kms.Key {
    const key = new kms.Key(this, 'AlarmsKey', {
      description: 'spillway: encrypts the alarm topic; CloudWatch may use it to publish alarms',
      enableKeyRotation: true,
    });
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'CloudWatchAlarmsPublish',
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        // A key policy's own resource: this key. (The policy AWS documents for alarm topics.)
        resources: ['*'],
      }),
    );
    return key;
  }

  private observability(buffer: Buffer, drain: lambda.Function, consumer: lambda.Function, api: apigw.RestApi): void {
    const s = this.settings;
    const topic = new sns.Topic(this, 'Alarms', {
      displayName: 'spillway alarms',
      enforceSSL: true,
      // CloudWatch alarms cannot publish to a topic under the AWS-managed key (its policy cannot
      // grant cloudwatch.amazonaws.com): a key of the stack's own that lets CloudWatch in.
      masterKey: this.alarmKey(),
    });
    if (s.alarmEmail) topic.addSubscription(new subscriptions.EmailSubscription(s.alarmEmail));
    const action = new cwActions.SnsAction(topic);
    const alarm = (id: string, metric: cloudwatch.IMetric, threshold: number, description: string) => {
      const a = new cloudwatch.Alarm(this, id, {
        metric,
        threshold,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription: description,
      });
      a.addAlarmAction(action);
      return a;
    };
    const minute = cdk.Duration.minutes(1);
    alarm(
      'DeadLettersNotEmpty',
      buffer.deadLetters.metricApproximateNumberOfMessagesVisible({ period: minute, statistic: 'Maximum' }),
      0,
      'Messages are in the dead-letter queue: see their spillway-reason attribute, then `spillway replay`.',
    );
    if (buffer.queue) {
      alarm(
        'OldestMessageAge',
        buffer.queue.metricApproximateAgeOfOldestMessage({ period: minute, statistic: 'Maximum' }),
        s.oldestMessageAlarmSecs,
        'The buffer is not draining fast enough: see `spillway status` and `spillway tune`.',
      );
    }
    if (buffer.stream) {
      alarm(
        'IteratorAge',
        buffer.stream.metricGetRecordsIteratorAgeMilliseconds({ period: minute, statistic: 'Maximum' }),
        s.iteratorAgeAlarmMs,
        'The drain is behind the stream; records older than the retention period are lost.',
      );
    }
    alarm('DrainErrors', drain.metricErrors({ period: minute, statistic: 'Sum' }), 0, 'The drain function failed invocations.');
    alarm('DrainThrottles', drain.metricThrottles({ period: minute, statistic: 'Sum' }), 0, 'The drain function was throttled.');
    alarm('ConsumerErrors', consumer.metricErrors({ period: minute, statistic: 'Sum' }), 0, 'The consumer function failed.');
    alarm(
      'ConsumerUnreadable',
      new cloudwatch.Metric({
        namespace: 'spillway',
        metricName: 'Unreadable',
        dimensionsMap: { Function: consumer.functionName },
        period: minute,
        statistic: 'Sum',
      }),
      0,
      'The consumer skipped records the MSK event carried unreadably (their positions are in its log).',
    );
    alarm('Api5xx', api.metricServerError({ period: minute, statistic: 'Sum' }), 0, 'The API answered 5xx.');

    const dashboard = new cloudwatch.Dashboard(this, 'Dashboard', { dashboardName: `${this.stackName}-pipeline` });
    const depth = buffer.queue
      ? [
          buffer.queue.metricApproximateNumberOfMessagesVisible(),
          buffer.queue.metricApproximateNumberOfMessagesNotVisible(),
        ]
      : [buffer.stream!.metricIncomingRecords()];
    const age = buffer.queue
      ? buffer.queue.metricApproximateAgeOfOldestMessage()
      : buffer.stream!.metricGetRecordsIteratorAgeMilliseconds();
    dashboard.addWidgets(
      new cloudwatch.GraphWidget({ title: 'API requests and errors', left: [api.metricCount(), api.metricClientError(), api.metricServerError()] }),
      new cloudwatch.GraphWidget({ title: 'API latency', left: [api.metricLatency({ statistic: 'p99' }), api.metricLatency({ statistic: 'p50' })] }),
      new cloudwatch.GraphWidget({ title: 'Buffer backlog', left: depth }),
      new cloudwatch.GraphWidget({ title: 'Buffer age', left: [age] }),
    );
    dashboard.addWidgets(
      new cloudwatch.GraphWidget({ title: 'Drain', left: [drain.metricInvocations(), drain.metricErrors(), drain.metricThrottles()] }),
      new cloudwatch.GraphWidget({ title: 'Drain duration', left: [drain.metricDuration({ statistic: 'p99' })] }),
      new cloudwatch.GraphWidget({ title: 'Dead letters', left: [buffer.deadLetters.metricApproximateNumberOfMessagesVisible()] }),
      new cloudwatch.GraphWidget({ title: 'Consumer', left: [consumer.metricInvocations(), consumer.metricErrors()] }),
    );
  }

  // ---- cdk-nag: every suppression with its reason -----------------------------------------------

  private suppressions(): void {
    const s = this.settings;
    NagSuppressions.addStackSuppressions(this, [
      {
        id: 'AwsSolutions-S1',
        reason:
          'The dead-letter bucket holds only poison records too large for the DLQ, written by the drain role and read by operators replaying; CloudTrail data events are the audit trail an account enables for it, not a second bucket of access logs.',
      },
      {
        id: 'AwsSolutions-IAM4',
        reason:
          'Lambda roles use AWSLambdaBasicExecutionRole / AWSLambdaVPCAccessExecutionRole (logs and VPC network interfaces only); the API Gateway account role uses AmazonAPIGatewayPushToCloudWatchLogs. All data access is granted by scoped inline policies.',
        appliesTo: [
          'Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole',
          'Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole',
          'Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs',
        ],
      },
      {
        id: 'AwsSolutions-IAM5',
        reason:
          'Wildcards that the services require and CDK grants generate: X-Ray segment writes (no resource-level permissions), the custom-resource provider invoking its own handler versions, and the MSK event source reading cluster networking (ec2:Describe*). Kafka data-plane actions name exact cluster, topic and group ARNs.',
      },
      {
        id: 'AwsSolutions-L1',
        reason: 'The only non-latest runtime is the CDK custom-resource provider framework (Node.js, managed by aws-cdk-lib); spillway functions run on provided.al2023.',
      },
      {
        id: 'AwsSolutions-APIG2',
        reason:
          'Bodies are arbitrary bytes (the Kafka value), so there is no schema to validate; ingest-api validates topic, key, headers and size (413 with the limit), and in the direct integration the buffer enforces its size limit (400 with the limit).',
      },
      {
        id: 'AwsSolutions-APIG3',
        reason: 'WAF is left to the operator (cost); the API is protected by IAM (SigV4) or API keys with a usage plan, and stage throttling.',
      },
      {
        id: 'AwsSolutions-COG4',
        reason: s.auth === 'iam'
          ? 'Methods use IAM (SigV4) authorization, the default; Cognito is not needed for service-to-service producers.'
          : 'The operator chose API keys with a usage plan (context auth=apikey); Cognito is not used.',
      },
      {
        id: 'AwsSolutions-SQS3',
        reason: 'This queue is the dead-letter queue (or on-failure destination) itself.',
      },
    ]);
    if (s.auth === 'apikey') {
      NagSuppressions.addStackSuppressions(this, [
        {
          id: 'AwsSolutions-APIG4',
          reason: 'The operator chose API keys with a usage plan (context auth=apikey) instead of IAM authorization.',
        },
      ]);
    }
  }
}

interface Network {
  readonly vpc: ec2.IVpc;
  readonly clients: ec2.SecurityGroup;
  readonly subnets: ec2.SubnetSelection;
}

interface Cluster {
  readonly arn: string;
  readonly topicArn: (topic: string) => string;
  readonly groupArn: (group: string) => string;
}

interface Topic {
  readonly bootstrap: string;
  readonly name: string;
  readonly resource: cdk.CustomResource;
}

interface Buffer {
  readonly kind: 'sqs' | 'kinesis';
  readonly queue?: sqs.Queue;
  readonly stream?: kinesis.Stream;
  readonly deadLetters: sqs.Queue;
  readonly deadLetterObjects: s3.Bucket;
}

/** How long the DLQ keeps a letter (SQS's most). */
const DLQ_RETENTION_DAYS = 14;

function checkAssets(dir: string): void {
  const missing = BINARIES.filter((b) => !fs.existsSync(path.join(dir, b, 'bootstrap')));
  if (missing.length > 0) {
    throw new Error(
      `Lambda binaries missing in ${dir}: ${missing.join(', ')}. Build them from the repository root with ` +
        '`pip install cargo-lambda ziglang && cargo lambda build --release --arm64`, ' +
        'or point -c lambdaAssets=<folder> at a folder with <binary>/bootstrap.',
    );
  }
}
