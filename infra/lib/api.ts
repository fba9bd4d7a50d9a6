// The API: API Gateway with IAM (SigV4) or API-key auth, stage throttling and access logs, in front
// of either ingest-api (every HTTP API feature) or a direct service integration that writes the
// envelope to the buffer itself (no Lambda in the hot path).

import * as cdk from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as iam from 'aws-cdk-lib/aws-iam';
import { Buffer } from './buffer';
import { logGroup, rustFunction } from './functions';
import { ingestTimeoutSecs, Settings } from './settings';
import { acceptedTemplate, refusedTemplate, kinesisTemplate, sqsTemplate } from './templates';

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

/** The REST API with the ingest integration of `s.ingest`, and with auth=apikey its usage plan. */
export function addApi(stack: cdk.Stack, s: Settings, buffer: Buffer): apigw.RestApi {
  const accessLogs = logGroup(stack, s, 'ApiAccessLogs');
  const api = new apigw.RestApi(stack, 'Api', {
    restApiName: `${stack.stackName}-ingest`,
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
    addLambdaIngest(stack, s, api, buffer);
  } else {
    addDirectIngest(stack, s, api, buffer);
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

/** ingest-api behind a proxy resource: every path and method goes to the function. */
function addLambdaIngest(stack: cdk.Stack, s: Settings, api: apigw.RestApi, buffer: Buffer): void {
  const environment: Record<string, string> = {
    SPILLWAY_BUFFER: buffer.kind,
    SPILLWAY_TOPIC: s.topics[0],
    SPILLWAY_TOPICS: s.topics.join(','),
    SPILLWAY_BUFFER_RETRY_BUDGET: `${s.ingestRetryBudgetSecs}s`,
  };
  // Values too large for the buffer (claim checks): kept under claims/ in the bucket whose
  // lifecycle removes what is left behind; the drain empties each once delivered.
  environment.SPILLWAY_CLAIM_BUCKET = buffer.deadLetterObjects.bucketName;
  if (s.tenantFrom) environment.SPILLWAY_TENANT_FROM = s.tenantFrom;
  if (buffer.queue) environment.SPILLWAY_SQS_QUEUE_URL = buffer.queue.queueUrl;
  if (buffer.stream) environment.SPILLWAY_KINESIS_STREAM = buffer.stream.streamName;
  const fn = rustFunction(stack, s, 'Ingest', 'ingest-api', undefined, {
    description: 'spillway ingest-api: validates and buffers messages',
    // Never cut off between writes: a 503 says "nothing was accepted" only when that is true.
    timeout: cdk.Duration.seconds(ingestTimeoutSecs(s)),
    environment,
  });
  if (buffer.queue) buffer.queue.grantSendMessages(fn);
  if (buffer.stream) buffer.stream.grantWrite(fn);
  // Write a value (never removed by ingest-api: a write that went unanswered may be in the buffer).
  buffer.deadLetterObjects.grantPut(fn, 'claims/*');
  api.root.addProxy({ defaultIntegration: new apigw.LambdaIntegration(fn), anyMethod: true });
}

/** POST /v1/topics/{topic}/messages per configured topic, written to the buffer by API Gateway. */
function addDirectIngest(stack: cdk.Stack, s: Settings, api: apigw.RestApi, buffer: Buffer): void {
  const role = new iam.Role(stack, 'DirectIntegrationRole', {
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
          path: `${stack.account}/${buffer.queue.queueName}`,
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
