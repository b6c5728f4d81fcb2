import { ArnFormat, Stack, Token, Validations } from 'aws-cdk-lib';
import type * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { join } from 'node:path';
import { RDS_IDENTIFIER } from '../config';
import { LAMBDA_ENV, SNAPSHOT_ID_PREFIX } from '../runtime-contract';
import { MigrationFunction, PROJECT_ROOT } from './migration-function';
import type { TrafficSwitch } from './traffic-switch';

/** The orchestrator's handler file (the state machines' Lambda tasks). */
export const ORCHESTRATOR_ENTRY = join(PROJECT_ROOT, 'lambdas', 'handlers', 'orchestrator.ts');

/** Props of the Orchestrator. */
export interface OrchestratorProps {
  /**
   * The handler file.
   * @default ORCHESTRATOR_ENTRY
   */
  readonly entry?: string;
  readonly vpc: ec2.IVpc;
  readonly vpcSubnets: ec2.SubnetSelection;
  readonly securityGroups: readonly ec2.ISecurityGroup[];
  /** Non-secret runtime configuration (the queue URLs and snapshot ids are added here). */
  readonly environment: Readonly<Record<string, string>>;
  /** The database secrets it may read (V1's read-only one, V2's). */
  readonly databaseSecrets: readonly secretsmanager.ISecret[];
  /**
   * The secret of a V1 role that owns V1's tables: used only by cleanup's rename and the
   * archives' drop, the only writes to V1. Only the orchestrator may read it.
   * @default - no second secret: the V1 secret's role must own the tables for those steps
   */
  readonly v1OwnerSecret?: secretsmanager.ISecret;
  /** Where it sends window messages. */
  readonly workerQueue: sqs.IQueue;
  /** The worker queue's DLQ: `redrive` receives and deletes its messages. */
  readonly workerDeadLetterQueue?: sqs.IQueue;
  /** The traffic percentage and dual-write switches it changes. */
  readonly trafficSwitch: TrafficSwitch;
  /**
   * The RDS instance to snapshot in phase 1 (V1's host).
   * @default - no RDS snapshot permissions
   */
  readonly rdsInstanceId?: string;
  /**
   * The Aurora cluster to snapshot in phase 1 (V1's host).
   * @default - no Aurora snapshot permissions
   */
  readonly auroraClusterId?: string;
}

export { RDS_IDENTIFIER };

/**
 * The orchestrator Lambda that the state machines' tasks call (prepare, plan and pump the
 * backfill, verify, step traffic, clean up), with exactly the permissions those need: read the
 * database secrets (and V1's owner secret, for the rename), send to the worker queue, change
 * the two switches, and snapshot the configured V1 instance or cluster into snapshots named
 * SNAPSHOT_ID_PREFIX*.
 */
export class Orchestrator extends Construct {
  public readonly function: MigrationFunction;

  constructor(scope: Construct, id: string, props: OrchestratorProps) {
    super(scope, id);
    if (props.rdsInstanceId && props.auroraClusterId) {
      throw new Error(`${this.node.path}: give rdsInstanceId or auroraClusterId, not both`);
    }
    for (const [field, id] of [
      ['rdsInstanceId', props.rdsInstanceId],
      ['auroraClusterId', props.auroraClusterId],
    ] as const) {
      if (id !== undefined && !Token.isUnresolved(id) && !RDS_IDENTIFIER.test(id)) {
        throw new Error(
          `${this.node.path}: ${field} ${JSON.stringify(id)} is not an RDS identifier (1–63 letters, digits ` +
            'and hyphens, starting with a letter, no "--", not ending in "-"); it goes into IAM resource ARNs',
        );
      }
    }
    const environment: Record<string, string> = {
      ...props.environment,
      [LAMBDA_ENV.workerQueueUrl]: props.workerQueue.queueUrl,
    };
    if (props.workerDeadLetterQueue)
      environment[LAMBDA_ENV.workerDlqUrl] = props.workerDeadLetterQueue.queueUrl;
    if (props.v1OwnerSecret) environment[LAMBDA_ENV.v1OwnerSecretArn] = props.v1OwnerSecret.secretArn;
    if (props.rdsInstanceId) environment[LAMBDA_ENV.rdsInstanceId] = props.rdsInstanceId;
    if (props.auroraClusterId) environment[LAMBDA_ENV.auroraClusterId] = props.auroraClusterId;

    this.function = new MigrationFunction(this, 'Function', {
      entry: props.entry ?? ORCHESTRATOR_ENTRY,
      description: 'Runs the migration phases for the state machines',
      vpc: props.vpc,
      vpcSubnets: props.vpcSubnets,
      securityGroups: props.securityGroups,
      environment,
    });
    const fn = this.function.function;
    for (const secret of [...props.databaseSecrets, ...(props.v1OwnerSecret ? [props.v1OwnerSecret] : [])])
      secret.grantRead(fn);
    props.workerQueue.grantSendMessages(fn);
    props.workerDeadLetterQueue?.grantConsumeMessages(fn);
    props.trafficSwitch.grantWrite(fn);

    if (props.rdsInstanceId || props.auroraClusterId)
      this.grantSnapshots(props.rdsInstanceId, props.auroraClusterId);
  }

  private grantSnapshots(rdsInstanceId?: string, auroraClusterId?: string): void {
    const stack = Stack.of(this);
    const arn = (resource: string, name: string) =>
      stack.formatArn({
        service: 'rds',
        resource,
        resourceName: name,
        arnFormat: ArnFormat.COLON_RESOURCE_NAME,
      });
    const source = rdsInstanceId ? arn('db', rdsInstanceId) : arn('cluster', auroraClusterId!);
    const snapshots = rdsInstanceId
      ? arn('snapshot', `${SNAPSHOT_ID_PREFIX}*`)
      : arn('cluster-snapshot', `${SNAPSHOT_ID_PREFIX}*`);
    const create = rdsInstanceId ? 'rds:CreateDBSnapshot' : 'rds:CreateDBClusterSnapshot';
    const describe = rdsInstanceId ? 'rds:DescribeDBSnapshots' : 'rds:DescribeDBClusterSnapshots';
    const fn = this.function.function;
    fn.addToRolePolicy(new iam.PolicyStatement({ actions: [create], resources: [source, snapshots] }));
    // The snapshot check compares the snapshot with its source (encryption, identity).
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        actions: [rdsInstanceId ? 'rds:DescribeDBInstances' : 'rds:DescribeDBClusters'],
        resources: [source],
      }),
    );
    fn.addToRolePolicy(
      new iam.PolicyStatement({ actions: [describe, 'rds:AddTagsToResource'], resources: [snapshots] }),
    );
    const kind = rdsInstanceId ? 'snapshot' : 'cluster-snapshot';
    // On the function construct: the finding is on its role's policy, beside the function.
    Validations.of(this.function).acknowledge({
      id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:rds:<AWS::Region>:<AWS::AccountId>:${kind}:${SNAPSHOT_ID_PREFIX}*]`,
      reason: `Snapshot names are chosen at run time; the grant is limited to the ${SNAPSHOT_ID_PREFIX} prefix`,
    });
  }
}
