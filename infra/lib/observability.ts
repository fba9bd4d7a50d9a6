// Observability: alarms on the dead letters, the buffer's age, the functions and the API, published
// to an encrypted SNS topic (optionally to an email address), and a dashboard of the pipeline.

import * as cdk from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { Buffer } from './buffer';
import { Drain } from './drain';
import { Settings } from './settings';

/** The alarm topic's key: a customer-managed key whose policy lets CloudWatch publish. */
function addAlarmKey(stack: cdk.Stack): kms.Key {
  const key = new kms.Key(stack, 'AlarmsKey', {
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

/** The alarms, their SNS topic (and email subscription), and the dashboard. */
export function addObservability(
  stack: cdk.Stack,
  s: Settings,
  buffer: Buffer,
  drainMapping: Drain,
  consumer: lambda.Function,
  api: apigw.RestApi,
): void {
  const topic = new sns.Topic(stack, 'Alarms', {
    displayName: 'spillway alarms',
    enforceSSL: true,
    // CloudWatch alarms cannot publish to a topic under the AWS-managed key (its policy cannot
    // grant cloudwatch.amazonaws.com): a key of the stack's own that lets CloudWatch in.
    masterKey: addAlarmKey(stack),
  });
  const drain = drainMapping.fn;
  // The drain mapping's event counts (its MetricsConfig turns them on): dropped events never
  // reached the function (a stream's record aged out or ran out of retries: it went to the
  // on-failure queue only if one is set), failed-invoke events are invocations Lambda could not
  // make (throttled, the function misconfigured).
  const mappingMetric = (metricName: string) =>
    new cloudwatch.Metric({
      namespace: 'AWS/Lambda',
      metricName,
      dimensionsMap: { EventSourceMappingUUID: drainMapping.mappingId },
      period: cdk.Duration.minutes(1),
      statistic: 'Sum',
    });
  if (s.alarmEmail) topic.addSubscription(new subscriptions.EmailSubscription(s.alarmEmail));
  const action = new cwActions.SnsAction(topic);
  const alarm = (id: string, metric: cloudwatch.IMetric, threshold: number, description: string) => {
    const a = new cloudwatch.Alarm(stack, id, {
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
  alarm(
    'DrainMappingDroppedEvents',
    mappingMetric('DroppedEventCount'),
    0,
    'The drain mapping dropped events: records that never reached the drain (see the DLQ or on-failure queue).',
  );
  alarm(
    'DrainMappingFailedInvokes',
    mappingMetric('FailedInvokeEventCount'),
    0,
    'The drain mapping could not invoke the drain for some events (throttling, configuration): they are retried.',
  );
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

  const dashboard = new cloudwatch.Dashboard(stack, 'Dashboard', { dashboardName: `${stack.stackName}-pipeline` });
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
  dashboard.addWidgets(
    new cloudwatch.GraphWidget({
      title: 'Drain mapping events',
      left: ['PolledEventCount', 'InvokedEventCount', 'DeletedEventCount'].map(mappingMetric),
      right: ['FailedInvokeEventCount', 'DroppedEventCount', 'OnFailureDestinationDeliveredEventCount'].map(mappingMetric),
    }),
  );
}
