// The network the Kafka clients run in: a VPC of the stack's own (public subnets with one NAT
// gateway, private subnets, flow logs), or the existing cluster's VPC and private subnets; and the
// security group of every function that talks to MSK.

import * as cdk from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Settings } from './settings';

export interface Network {
  readonly vpc: ec2.IVpc;
  readonly clients: ec2.SecurityGroup;
  readonly subnets: ec2.SubnetSelection;
}

/** The VPC and subnets the Kafka clients run in, and their security group. */
export function addNetwork(stack: cdk.Stack, s: Settings): Network {
  let vpc: ec2.IVpc;
  if (s.existingCluster) {
    const e = s.existingCluster;
    vpc = ec2.Vpc.fromVpcAttributes(stack, 'Vpc', {
      vpcId: e.vpcId,
      availabilityZones: e.availabilityZones,
      privateSubnetIds: e.privateSubnetIds,
    });
  } else {
    const flowLogs = new logs.LogGroup(stack, 'VpcFlowLogs', {
      retention: s.logRetentionDays as logs.RetentionDays,
      removalPolicy: cdk.RemovalPolicy.DESTROY,
    });
    vpc = new ec2.Vpc(stack, 'Vpc', {
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
  const clients = new ec2.SecurityGroup(stack, 'KafkaClients', {
    vpc,
    description: 'spillway functions that talk to MSK',
    allowAllOutbound: true,
  });
  const subnets: ec2.SubnetSelection = s.existingCluster
    ? { subnets: vpc.privateSubnets }
    : { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS };
  return { vpc, clients, subnets };
}
