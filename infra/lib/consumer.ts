// The consumer: msk-consumer on an MSK event source mapping of the first topic, with
// least-privilege Kafka IAM on the exact cluster, topic and group.

import * as cdk from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sources from 'aws-cdk-lib/aws-lambda-event-sources';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { rustFunction } from './functions';
import { Cluster, Topic } from './kafka';
import { Network } from './network';
import { Settings } from './settings';

/** The consumer group of the msk-consumer function. */
export const CONSUMER_GROUP = 'spillway-consumer';

/** The consumer function, its Kafka permissions, and its mapping on the first topic. */
export function addConsumer(stack: cdk.Stack, s: Settings, network: Network, cluster: Cluster, topic: Topic): lambda.Function {
  const fn = rustFunction(stack, s, 'Consumer', 'msk-consumer', network, {
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
            new sqs.Queue(stack, 'ConsumerFailures', {
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
