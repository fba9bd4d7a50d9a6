#!/usr/bin/env node
// The CDK app: one stack, configured through context (see lib/settings.ts and the README's
// "Deploy to AWS"), checked by cdk-nag's AWS Solutions rules on every synth.

import * as cdk from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { settingsFromContext } from '../lib/settings';
import { SpillwayStack } from '../lib/spillway-stack';

const app = new cdk.App();
const settings = settingsFromContext(app.node);
new SpillwayStack(app, settings.stackName, {
  settings,
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
  description: 'spillway: burst-proof HTTP → Kafka for Amazon MSK with IAM',
});
cdk.Aspects.of(app).add(new AwsSolutionsChecks({ verbose: true }));
