import { Aws, CfnMapping, CfnOutput, Duration, Fn, Stack, type StackProps, Token } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type * as sns from 'aws-cdk-lib/aws-sns';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import { CONFIG_ENV } from '../lambdas/core/config';
import { DEMO_DATABASE_NAME, type StackConfig } from './config';
import { CONSOLE_DOMAINS } from './console';
import { MigrationAlarms } from './constructs/alarms';
import { BackfillPipeline } from './constructs/backfill-pipeline';
import { MigrationDashboard } from './constructs/dashboard';
import { DemoEnvironment } from './constructs/demo-environment';
import type { MigrationFunction } from './constructs/migration-function';
import { OpsPolicy } from './constructs/ops-policy';
import { ORCHESTRATOR_ENTRY, Orchestrator } from './constructs/orchestrator';
import { RepairPipeline } from './constructs/repair-pipeline';
import { TrafficSwitch } from './constructs/traffic-switch';
import { LAMBDA_ENV } from './runtime-contract';

/**
 * The state machines of the migration (phases, traffic steps, rollback), built by a separate
 * construct from what the stack exposes. Only `rollback` is required by the stack: the health
 * alarm starts it.
 */
export interface MigrationStateMachines {
  readonly rollback: sfn.IStateMachine;
  /** Phases 1–3 and 5; its ARN is a stack output when given. */
  readonly migration?: sfn.IStateMachine;
  /** The traffic steps; its ARN is a stack output when given. */
  readonly cutover?: sfn.IStateMachine;
  /** Every state machine, the rollback included (shown on the dashboard, for grants). */
  readonly all: readonly sfn.IStateMachine[];
}

/** Builds the state machines in the stack, from its public members (orchestrator, queue, …). */
export type StateMachinesFactory = (stack: MigrationStack) => MigrationStateMachines;

/** Props of MigrationStack. */
export interface MigrationStackProps extends StackProps {
  /** The validated stack configuration (lib/config.ts). */
  readonly config: StackConfig;
  /**
   * Builds the state machines; the stack routes the health alarm to their `rollback`.
   * @default - no state machines (add them later with `addStateMachines`)
   */
  readonly stateMachines?: StateMachinesFactory;
  /**
   * The orchestrator's handler file.
   * @default ORCHESTRATOR_ENTRY
   */
  readonly orchestratorEntry?: string;
}

/** A secret ARN with its 6-character suffix names exactly one secret; a partial one needs a wildcard. */
const COMPLETE_SECRET_ARN = /-[A-Za-z0-9]{6}$/;

function importSecret(scope: Construct, id: string, arn: string): secretsmanager.ISecret {
  return COMPLETE_SECRET_ARN.test(arn)
    ? secretsmanager.Secret.fromSecretCompleteArn(scope, id, arn)
    : secretsmanager.Secret.fromSecretPartialArn(scope, id, arn);
}

/**
 * The migration's AWS infrastructure, wired from one construct per concern: the backfill
 * pipeline (queue, DLQ, worker), the dual-write repair pipeline (queue, DLQ, repair worker), the
 * traffic switch (SSM parameters), the alarms that roll traffic back, the dashboard, and
 * (lazily) the orchestrator Lambda the state machines call. Its outputs are what ops and the
 * backend need: queue URLs, parameter names and (once added) the state machines' ARNs.
 */
export class MigrationStack extends Stack {
  public readonly config: StackConfig;
  /** Where the Lambdas run and reach the databases. */
  public readonly vpc: ec2.IVpc;
  public readonly vpcSubnets: ec2.SubnetSelection;
  public readonly securityGroups: readonly ec2.ISecurityGroup[];
  /** The database credentials (Secrets Manager); only their ARNs reach the Lambdas. */
  public readonly databaseSecrets: {
    /** V1, read-only: every function reads V1 with it. */
    readonly v1: secretsmanager.ISecret;
    readonly v2: secretsmanager.ISecret;
    /** A V1 role that owns V1's tables, for cleanup's rename only (the orchestrator's). */
    readonly v1Owner?: secretsmanager.ISecret;
  };
  /** The non-secret runtime configuration every migration Lambda gets (LAMBDA_ENV, CONFIG_ENV). */
  public readonly lambdaEnvironment: Readonly<Record<string, string>>;
  /** Only with `demo: true`: the VPC and database the stack created. */
  public readonly demo?: DemoEnvironment;
  public readonly backfill: BackfillPipeline;
  /** The repair path of the backend's dual writes; `repair.grantSend(role)` for the backend. */
  public readonly repair: RepairPipeline;
  public readonly trafficSwitch: TrafficSwitch;
  public readonly alarms: MigrationAlarms;
  public readonly dashboard: MigrationDashboard;
  /** What phase 1 snapshots (from config, or the demo instance). */
  public readonly snapshot?: { readonly rdsInstanceId?: string; readonly auroraClusterId?: string };
  /** Set once the state machines are added (props.stateMachines or addStateMachines). */
  public stateMachines?: MigrationStateMachines;
  /** Set with the state machines: the managed policy for the ops role (OpsPolicy). */
  public opsPolicy?: OpsPolicy;

  private readonly orchestratorEntry: string;
  private orchestratorConstruct?: Orchestrator;

  constructor(scope: Construct, id: string, props: MigrationStackProps) {
    super(scope, id, props);
    const config = props.config;
    this.config = config;
    this.orchestratorEntry = props.orchestratorEntry ?? ORCHESTRATOR_ENTRY;

    let endpoints: { v1: Endpoint; v2: Endpoint };
    let v2RdsInstanceId: string | undefined;
    let snapshot = config.snapshot;
    if (config.demo) {
      const demo = new DemoEnvironment(this, 'Demo');
      this.demo = demo;
      this.vpc = demo.vpc;
      this.vpcSubnets = demo.subnets;
      this.securityGroups = [demo.lambdaSecurityGroup];
      this.databaseSecrets = { v1: demo.secret, v2: demo.secret };
      const endpoint: Endpoint = {
        host: demo.database.dbInstanceEndpointAddress,
        port: demo.database.dbInstanceEndpointPort,
        database: DEMO_DATABASE_NAME,
        secretArn: demo.secret.secretArn,
      };
      endpoints = { v1: endpoint, v2: endpoint };
      v2RdsInstanceId = demo.database.instanceIdentifier;
      snapshot ??= { rdsInstanceId: demo.database.instanceIdentifier };
    } else {
      this.vpc = ec2.Vpc.fromVpcAttributes(this, 'Vpc', {
        vpcId: config.vpcId,
        availabilityZones: this.availabilityZones,
      });
      this.vpcSubnets = {
        subnets: config.subnetIds.map((subnetId) =>
          ec2.Subnet.fromSubnetId(this, `Subnet-${subnetId}`, subnetId),
        ),
      };
      this.securityGroups = [
        ec2.SecurityGroup.fromSecurityGroupId(this, 'SecurityGroup', config.securityGroupId, {
          mutable: false,
        }),
      ];
      this.databaseSecrets = {
        v1: importSecret(this, 'V1Secret', config.v1.secretArn),
        v2: importSecret(this, 'V2Secret', config.v2.secretArn),
        ...(config.v1.ownerSecretArn
          ? { v1Owner: importSecret(this, 'V1OwnerSecret', config.v1.ownerSecretArn) }
          : {}),
      };
      const toEndpoint = (e: typeof config.v1): Endpoint => ({ ...e, port: String(e.port) });
      endpoints = { v1: toEndpoint(config.v1), v2: toEndpoint(config.v2) };
      v2RdsInstanceId = config.v2.rdsInstanceId;
    }

    this.lambdaEnvironment = {
      [LAMBDA_ENV.v1Host]: endpoints.v1.host,
      [LAMBDA_ENV.v1Port]: endpoints.v1.port,
      [LAMBDA_ENV.v1Database]: endpoints.v1.database,
      [LAMBDA_ENV.v1SecretArn]: endpoints.v1.secretArn,
      [LAMBDA_ENV.v2Host]: endpoints.v2.host,
      [LAMBDA_ENV.v2Port]: endpoints.v2.port,
      [LAMBDA_ENV.v2Database]: endpoints.v2.database,
      [LAMBDA_ENV.v2SecretArn]: endpoints.v2.secretArn,
      [LAMBDA_ENV.dbSsl]: 'true',
      [CONFIG_ENV.v1Schema]: config.schemas.v1,
      [CONFIG_ENV.v2Schema]: config.schemas.v2,
      [CONFIG_ENV.controlSchema]: config.schemas.control,
      [CONFIG_ENV.ssmPrefix]: config.ssmPrefix,
      [CONFIG_ENV.concurrency]: String(config.worker.concurrency),
      // The worker marks a window failed on its last delivery: the same count as the redrive.
      [CONFIG_ENV.maxReceiveCount]: String(config.worker.maxReceiveCount),
      [CONFIG_ENV.cutoverSchedule]: JSON.stringify(
        config.cutoverSchedule.map((s) => ({ percentage: s.percentage, bakeSeconds: s.bakeMinutes * 60 })),
      ),
    };
    this.snapshot = snapshot;

    this.backfill = new BackfillPipeline(this, 'Backfill', {
      vpc: this.vpc,
      vpcSubnets: this.vpcSubnets,
      securityGroups: this.securityGroups,
      environment: this.lambdaEnvironment,
      databaseSecrets: this.uniqueSecrets(),
      workerTimeout: Duration.seconds(config.worker.timeoutSeconds),
      maxReceiveCount: config.worker.maxReceiveCount,
      maxConcurrency: config.worker.concurrency,
      batchSize: config.worker.batchSize,
    });
    this.repair = new RepairPipeline(this, 'Repair', {
      vpc: this.vpc,
      vpcSubnets: this.vpcSubnets,
      securityGroups: this.securityGroups,
      environment: this.lambdaEnvironment,
      databaseSecrets: this.uniqueSecrets(),
    });
    this.trafficSwitch = new TrafficSwitch(this, 'TrafficSwitch', { prefix: config.ssmPrefix });
    this.alarms = new MigrationAlarms(this, 'Alarms', {
      deadLetterQueue: this.backfill.deadLetterQueue,
      worker: this.backfill.worker.function,
      repairDeadLetterQueue: this.repair.deadLetterQueue,
      workerErrorsThreshold: config.worker.errorsThreshold,
      backendMetrics: config.backendMetrics,
      v2RdsInstanceId,
      databaseCpuPercent: config.databaseAlarms.cpuPercent,
      databaseConnections: config.databaseAlarms.connections,
      topicArn: config.notifications?.topicArn,
      email: config.notifications?.email,
    });
    this.dashboard = new MigrationDashboard(this, 'Dashboard', {
      queue: this.backfill.queue,
      deadLetterQueue: this.backfill.deadLetterQueue,
      repair: { queue: this.repair.queue, deadLetterQueue: this.repair.deadLetterQueue },
      alarms: [this.alarms.health, ...this.alarms.alarms],
    });

    new CfnOutput(this, 'WorkerQueueUrl', {
      description: 'URL of the backfill worker queue (window messages)',
      value: this.backfill.queue.queueUrl,
    });
    new CfnOutput(this, 'RepairQueueUrl', {
      description:
        "URL of the dual-write repair queue: the IoT backend's REPAIR_QUEUE_URL (client/README.md)",
      value: this.repair.queue.queueUrl,
    });
    new CfnOutput(this, 'TrafficPercentageParameterName', {
      description: 'SSM parameter holding the V2 read-traffic percentage (0-100) the IoT backend reads',
      value: this.trafficSwitch.trafficPercentage.parameterName,
    });
    new CfnOutput(this, 'DualWriteParameterName', {
      description: 'SSM parameter holding the dual-write switch (on/off) the IoT backend reads',
      value: this.trafficSwitch.dualWrite.parameterName,
    });
    new CfnOutput(this, 'WritePrimaryParameterName', {
      description: 'SSM parameter naming the side the IoT backend writes first (v1/v2), set by the write switch',
      value: this.trafficSwitch.writePrimary.parameterName,
    });
    const consoleDomains = new CfnMapping(this, 'ConsoleDomains', {
      mapping: Object.fromEntries(Object.entries(CONSOLE_DOMAINS).map(([p, domain]) => [p, { domain }])),
    });
    new CfnOutput(this, 'DashboardUrl', {
      description: 'The migration dashboard (phases, queues, traffic, alarms) in the CloudWatch console',
      value: Fn.join('', [
        'https://',
        Aws.REGION,
        '.',
        consoleDomains.findInMap(Aws.PARTITION, 'domain'),
        '/cloudwatch/home?region=',
        Aws.REGION,
        '#dashboards/dashboard/',
        this.dashboard.dashboard.dashboardName,
      ]),
    });
    new CfnOutput(this, 'AlarmTopicArn', {
      description:
        'SNS topic the migration alarms notify (MigrationHealth and the rollback alarms): subscribe on-call to it',
      value: this.alarms.topic.topicArn,
    });

    if (props.stateMachines) this.addStateMachines(props.stateMachines);
  }

  /** The worker queue (window messages). */
  public get workerQueue(): sqs.IQueue {
    return this.backfill.queue;
  }

  /** The backfill DLQ. */
  public get deadLetterQueue(): sqs.IQueue {
    return this.backfill.deadLetterQueue;
  }

  /** Where alarm notifications go. */
  public get alarmTopic(): sns.ITopic {
    return this.alarms.topic;
  }

  /**
   * The orchestrator Lambda the state machines' tasks call, with its grants (secrets, worker
   * queue, DLQ, switches, snapshots). Created on first use, because its handler
   * (lambdas/handlers/orchestrator.ts) arrives with the state machines.
   */
  public get orchestrator(): MigrationFunction {
    this.orchestratorConstruct ??= new Orchestrator(this, 'Orchestrator', {
      entry: this.orchestratorEntry,
      vpc: this.vpc,
      vpcSubnets: this.vpcSubnets,
      securityGroups: this.securityGroups,
      environment: this.lambdaEnvironment,
      databaseSecrets: this.uniqueSecrets(),
      v1OwnerSecret: this.databaseSecrets.v1Owner,
      workerQueue: this.backfill.queue,
      workerDeadLetterQueue: this.backfill.deadLetterQueue,
      trafficSwitch: this.trafficSwitch,
      rdsInstanceId: this.snapshot?.rdsInstanceId,
      auroraClusterId: this.snapshot?.auroraClusterId,
    });
    return this.orchestratorConstruct.function;
  }

  /** Adds the state machines and routes the health alarm to their rollback (once). */
  public addStateMachines(factory: StateMachinesFactory): MigrationStateMachines {
    if (this.stateMachines) throw new Error(`${this.node.path}: the state machines were already added`);
    const machines = factory(this);
    this.stateMachines = machines;
    this.alarms.routeAlarmToRollback(machines.rollback);
    const outputs = [
      ['Migration', machines.migration, 'MIGRATION_STATE_MACHINE_ARN', '--migration-arn'],
      ['Cutover', machines.cutover, 'CUTOVER_STATE_MACHINE_ARN', '--cutover-arn'],
      ['Rollback', machines.rollback, 'ROLLBACK_STATE_MACHINE_ARN', '--rollback-arn'],
    ] as const;
    this.opsPolicy = new OpsPolicy(this, 'Ops', {
      stateMachines: outputs.flatMap(([, machine]) => (machine ? [machine] : [])),
    });
    new CfnOutput(this, 'OpsPolicyArn', {
      description:
        'Managed policy for the ops role: start the Migration, Cutover and Rollback state machines, follow and stop their executions',
      value: this.opsPolicy.policy.managedPolicyArn,
    });
    for (const [name, machine, env, flag] of outputs) {
      if (!machine) continue;
      new CfnOutput(this, `${name}StateMachineArn`, {
        description: `ARN of the ${name} state machine: \`npm run migrate\` reads it from ${env} (or ${flag})`,
        value: machine.stateMachineArn,
      });
    }
    return machines;
  }

  private uniqueSecrets(): secretsmanager.ISecret[] {
    const { v1, v2 } = this.databaseSecrets;
    const same = v1 === v2 || (!Token.isUnresolved(v1.secretArn) && v1.secretArn === v2.secretArn);
    return same ? [v1] : [v1, v2];
  }
}

interface Endpoint {
  host: string;
  port: string;
  database: string;
  secretArn: string;
}
