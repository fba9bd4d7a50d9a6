// The Rust functions and their log groups, as every part of the stack creates them: arm64 on
// provided.al2023, X-Ray tracing, JSON logs to a log group with the configured retention.
//
// Like every part of the stack, these create their resources with the stack itself as scope and
// the ids they always had, so that logical IDs (and with them the deployed resources) stay put.

import * as fs from 'fs';
import * as path from 'path';
import * as cdk from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Network } from './network';
import { Settings } from './settings';

/** The Lambda binaries (cargo lambda's output folders). */
export const BINARIES = ['ingest-api', 'buffer-drain', 'msk-consumer', 'topic-resource'] as const;
export type Binary = (typeof BINARIES)[number];

export function logGroup(stack: cdk.Stack, s: Settings, id: string): logs.LogGroup {
  return new logs.LogGroup(stack, id, {
    retention: s.logRetentionDays as logs.RetentionDays,
    removalPolicy: cdk.RemovalPolicy.DESTROY,
  });
}

/** A function running `binary` from lambdaAssets, in `network` when given, with a log group `<id>Logs`. */
export function rustFunction(
  stack: cdk.Stack,
  s: Settings,
  id: string,
  binary: Binary,
  network: Network | undefined,
  props: Partial<lambda.FunctionProps>,
): lambda.Function {
  return new lambda.Function(stack, id, {
    runtime: lambda.Runtime.PROVIDED_AL2023,
    architecture: lambda.Architecture.ARM_64,
    handler: 'bootstrap',
    code: lambda.Code.fromAsset(path.join(s.lambdaAssets, binary)),
    memorySize: 256,
    tracing: lambda.Tracing.ACTIVE,
    logGroup: logGroup(stack, s, `${id}Logs`),
    loggingFormat: lambda.LoggingFormat.JSON,
    ...(network ? { vpc: network.vpc, vpcSubnets: network.subnets, securityGroups: [network.clients] } : {}),
    ...props,
    environment: { RUST_LOG: 'info', ...(props.environment ?? {}) },
  });
}

export function checkAssets(dir: string): void {
  const missing = BINARIES.filter((b) => !fs.existsSync(path.join(dir, b, 'bootstrap')));
  if (missing.length > 0) {
    throw new Error(
      `Lambda binaries missing in ${dir}: ${missing.join(', ')}. Build them from the repository root with ` +
        '`pip install cargo-lambda ziglang && cargo lambda build --release --arm64`, ' +
        'or point -c lambdaAssets=<folder> at a folder with <binary>/bootstrap.',
    );
  }
}
