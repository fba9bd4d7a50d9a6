// The whole pipeline in one stack: network and MSK Serverless (IAM), the topic custom resource,
// the buffer (SQS + DLQ, or Kinesis + on-failure queue), the API, the drain, the consumer, and the
// alarms and dashboard — each part in its own module, composed here with the stack's outputs and
// its cdk-nag suppressions.
//
// Every part creates its resources with this stack as their scope, under the ids they have always
// had: a construct in between would change their logical IDs, and CloudFormation would replace them
// (the queue and the dead-letter bucket with their messages among them).

import * as cdk from 'aws-cdk-lib';
import { NagSuppressions } from 'cdk-nag';
import { Construct } from 'constructs';
import { addApi } from './api';
import { addBuffer } from './buffer';
import { addConsumer } from './consumer';
import { addDrain } from './drain';
import { checkAssets } from './functions';
import { addCluster, addTopics } from './kafka';
import { addNetwork } from './network';
import { addObservability } from './observability';
import { Settings } from './settings';

export { DIRECT_CONTENT_TYPES } from './api';
export { CONSUMER_GROUP } from './consumer';
export { BINARIES, type Binary } from './functions';

export interface SpillwayStackProps extends cdk.StackProps {
  readonly settings: Settings;
}

export class SpillwayStack extends cdk.Stack {
  readonly settings: Settings;

  constructor(scope: Construct, id: string, props: SpillwayStackProps) {
    super(scope, id, props);
    const s = (this.settings = props.settings);
    checkAssets(s.lambdaAssets);

    const network = addNetwork(this, s);
    const cluster = addCluster(this, s, network);
    const topic = addTopics(this, s, network, cluster);
    const buffer = addBuffer(this, s);
    const drain = addDrain(this, s, network, cluster, topic, buffer);
    const consumer = addConsumer(this, s, network, cluster, topic);
    const api = addApi(this, s, buffer);
    addObservability(this, s, buffer, drain, consumer, api);

    new cdk.CfnOutput(this, 'ApiUrl', { value: api.url, description: 'POST /v1/topics/{topic}/messages' });
    new cdk.CfnOutput(this, 'BootstrapBrokers', { value: topic.bootstrap, description: 'MSK IAM bootstrap string' });
    new cdk.CfnOutput(this, 'DrainFunction', { value: drain.fn.functionName });
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

  // ---- cdk-nag: every suppression with its reason -----------------------------------------------

  private suppressions(): void {
    const s = this.settings;
    NagSuppressions.addStackSuppressions(this, [
      {
        id: 'AwsSolutions-S1',
        reason:
          'The dead-letter bucket holds poison records too large for the DLQ (written by the drain role, read by operators replaying) and values too large for the buffer (written by ingest-api, read and emptied by the drain); CloudTrail data events are the audit trail an account enables for it, not a second bucket of access logs.',
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
    if (s.drainCapacityProvider === 'create') {
      NagSuppressions.addStackSuppressions(this, [
        {
          id: 'AwsSolutions-IAM4',
          reason:
            "The drain's capacity provider (Lambda Managed Instances) is run by an operator role with AWSLambdaManagedEC2ResourceOperator, the managed policy Lambda documents for managing the provider's EC2 instances; AWS keeps it current as the service changes.",
          appliesTo: ['Policy::arn:<AWS::Partition>:iam::aws:policy/AWSLambdaManagedEC2ResourceOperator'],
        },
      ]);
    }
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
