// Kafka: the MSK Serverless cluster with IAM authentication (or an existing cluster, by ARN), with
// the ARNs the functions' least-privilege policies name, and the topics, created by the Rust
// topic-resource custom resource over MSK IAM.

import * as cdk from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as msk from 'aws-cdk-lib/aws-msk';
import * as cr from 'aws-cdk-lib/custom-resources';
import { logGroup, rustFunction } from './functions';
import { Network } from './network';
import { Settings } from './settings';

export interface Cluster {
  readonly arn: string;
  readonly topicArn: (topic: string) => string;
  readonly groupArn: (group: string) => string;
}

export interface Topic {
  readonly bootstrap: string;
  readonly name: string;
  readonly resource: cdk.CustomResource;
}

/**
 * The cluster (created, or the existing one by ARN), its security group letting the functions in on
 * 9098 (MSK IAM), and the ARNs of its topics and groups for least-privilege policies.
 */
export function addCluster(stack: cdk.Stack, s: Settings, network: Network): Cluster {
  // The functions' security group, and the drain's capacity provider's when it is the operator's.
  const letIn = (sg: ec2.ISecurityGroup) => {
    sg.addIngressRule(network.clients, ec2.Port.tcp(9098), 'MSK IAM from spillway functions');
    if (s.drainCapacityProviderSecurityGroupId) {
      sg.addIngressRule(
        ec2.Peer.securityGroupId(s.drainCapacityProviderSecurityGroupId),
        ec2.Port.tcp(9098),
        "MSK IAM from the drain's capacity provider",
      );
    }
  };
  let arn: string;
  if (s.existingCluster) {
    arn = s.existingCluster.clusterArn;
    const sg = ec2.SecurityGroup.fromSecurityGroupId(stack, 'ClusterSecurityGroup', s.existingCluster.clusterSecurityGroupId, {
      mutable: true,
    });
    letIn(sg);
  } else {
    const sg = new ec2.SecurityGroup(stack, 'ClusterSecurityGroup', {
      vpc: network.vpc,
      description: 'MSK Serverless: IAM listener for spillway functions',
      allowAllOutbound: false,
    });
    letIn(sg);
    const cluster = new msk.CfnServerlessCluster(stack, 'Cluster', {
      clusterName: `${stack.stackName.toLowerCase()}-msk`.slice(0, 64),
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
    stack.formatArn({ service: 'kafka', resource: kind, resourceName: `${name}/${uuid}/${rest}` });
  return {
    arn,
    topicArn: (topic: string) => resource('topic', topic),
    groupArn: (group: string) => resource('group', group),
  };
}

// ---- the topic custom resource --------------------------------------------------------------

/**
 * The topic-resource function, its provider, and one custom resource per configured topic: the first
 * (the default topic, and the consumer's) is returned, with the bootstrap string it reports.
 */
export function addTopics(stack: cdk.Stack, s: Settings, network: Network, cluster: Cluster): Topic {
  const fn = rustFunction(stack, s, 'TopicResource', 'topic-resource', network, {
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

  const providerLogs = logGroup(stack, s, 'TopicProviderLogs');
  const provider = new cr.Provider(stack, 'TopicProvider', {
    onEventHandler: fn,
    logGroup: providerLogs,
  });
  let bootstrap = '';
  let first: cdk.CustomResource | undefined;
  s.topics.forEach((name, i) => {
    const resource = new cdk.CustomResource(stack, i === 0 ? 'Topic' : `Topic${i}`, {
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
