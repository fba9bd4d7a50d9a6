// Reading CDK context (`-c name=value` or cdk.json): typed values within bounds, each falling back
// to its default when unset; a wrong value stops the synth with an error that names the option and
// what it accepts.

import { Node } from 'constructs';
import type { ExistingCluster } from './settings';

export class Reader {
  constructor(private readonly node: Node) {}

  raw(name: string): unknown {
    return this.node.tryGetContext(name);
  }

  string(name: string, fallback?: string): string | undefined {
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

/** The existing cluster (context clusterArn and its network), or undefined when clusterArn is unset. */
export function existingCluster(r: Reader): ExistingCluster | undefined {
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
