import { Duration, Stack, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subs from 'aws-cdk-lib/aws-sns-subscriptions';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import {
  DEFAULT_DB_CONNECTIONS_THRESHOLD,
  DEFAULT_DB_CPU_THRESHOLD_PERCENT,
  DEFAULT_WORKER_ERRORS_THRESHOLD,
} from '../config';
import { METRIC_NAMES, METRICS_NAMESPACE } from '../runtime-contract';

/** The composite alarm's name (after the stack name): any child in ALARM means "roll back". */
export const HEALTH_ALARM_NAME = 'MigrationHealth';
/** The `actor` of rollbacks started by the alarm (the Rollback state machine's input). */
export const ALARM_ACTOR = 'alarm';
/** The metric period of the fast alarms (backend, DLQ, shadow reads). */
export const ALARM_PERIOD = Duration.minutes(1);

/** The backend's own metrics, watched during cutover. */
export interface BackendMetricsProps {
  readonly namespace: string;
  readonly dimensions?: Readonly<Record<string, string>>;
  /** Metric whose average is the error rate; alarm above `threshold`. */
  readonly errorRate: { readonly metricName: string; readonly threshold: number };
  /** Latency metric; alarm when its p99 is above `threshold`. */
  readonly p99Latency: { readonly metricName: string; readonly threshold: number };
}

/** Props of MigrationAlarms. */
export interface MigrationAlarmsProps {
  /** The backfill DLQ: any message in it is a window that failed for good. */
  readonly deadLetterQueue: sqs.IQueue;
  /** The backfill worker. */
  readonly worker: lambda.IFunction;
  /**
   * The repair DLQ: any message in it is a row whose V2 copy could not be re-synced, so V2 reads
   * of it may be wrong.
   * @default - no repair DLQ alarm
   */
  readonly repairDeadLetterQueue?: sqs.IQueue;
  /**
   * Worker invocation errors per 5 minutes that raise the alarm (window failures are reported
   * per record and do not count; these are whole failed invocations, e.g. database unreachable).
   * @default DEFAULT_WORKER_ERRORS_THRESHOLD
   */
  readonly workerErrorsThreshold?: number;
  /**
   * The backend's error-rate and latency metrics.
   * @default - no backend alarms
   */
  readonly backendMetrics?: BackendMetricsProps;
  /**
   * The RDS instance of the V2 database, for CPU and connections alarms.
   * @default - no database alarms
   */
  readonly v2RdsInstanceId?: string;
  /**
   * CPU (%) of the V2 database instance that raises the alarm.
   * @default DEFAULT_DB_CPU_THRESHOLD_PERCENT
   */
  readonly databaseCpuPercent?: number;
  /**
   * Connections to the V2 database instance that raise the alarm.
   * @default DEFAULT_DB_CONNECTIONS_THRESHOLD
   */
  readonly databaseConnections?: number;
  /**
   * An existing SNS topic for notifications (its encryption and policy are its owner's).
   * @default - a new KMS-encrypted topic that enforces SSL
   */
  readonly topicArn?: string;
  /**
   * An e-mail address subscribed to the topic.
   * @default - no subscription
   */
  readonly email?: string;
}

/**
 * The alarms that roll traffic back: DLQ depth (backfill and, when given, repair), worker errors, backend error rate and p99
 * latency, V2 database CPU and connections, shadow-read mismatches; one composite alarm
 * (MigrationHealth, OR of them all) notifies an SNS topic and, once `routeAlarmToRollback` is
 * called, starts the Rollback state machine through EventBridge.
 */
export class MigrationAlarms extends Construct {
  /** Where alarm notifications go. */
  public readonly topic: sns.ITopic;
  /** The topic's key, when this construct created the topic. */
  public readonly topicKey?: kms.Key;
  /** Every child alarm of the composite. */
  public readonly alarms: cloudwatch.Alarm[] = [];
  /** MigrationHealth: ALARM when any child is in ALARM. */
  public readonly health: cloudwatch.CompositeAlarm;
  /** The rule that starts the rollback (after routeAlarmToRollback). */
  public rollbackRule?: events.Rule;

  constructor(scope: Construct, id: string, props: MigrationAlarmsProps) {
    super(scope, id);
    this.topic = props.topicArn ? sns.Topic.fromTopicArn(this, 'Topic', props.topicArn) : this.createTopic();
    if (!props.topicArn) this.topicKey = (this.topic as sns.Topic).masterKey as kms.Key;
    if (props.email) this.topic.addSubscription(new subs.EmailSubscription(props.email));

    this.alarms.push(
      this.queueNotEmpty(
        props.deadLetterQueue,
        'DeadLetterQueueDepth',
        'Backfill windows failed for good and are in the DLQ',
      ),
    );
    if (props.repairDeadLetterQueue) {
      this.alarms.push(
        this.queueNotEmpty(
          props.repairDeadLetterQueue,
          'RepairDeadLetterQueueDepth',
          'Rows whose V2 dual write failed could not be repaired and are in the repair DLQ',
        ),
      );
    }
    this.alarms.push(
      props.worker
        .metricErrors({ period: Duration.minutes(5), statistic: 'Sum' })
        .createAlarm(this, 'WorkerErrors', {
          alarmDescription: 'Backfill worker invocations fail as a whole (database unreachable, bad events)',
          threshold: props.workerErrorsThreshold ?? DEFAULT_WORKER_ERRORS_THRESHOLD,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          evaluationPeriods: 1,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        }),
    );
    this.alarms.push(
      new cloudwatch.Metric({
        namespace: METRICS_NAMESPACE,
        metricName: METRIC_NAMES.shadowReadMismatch,
        period: Duration.minutes(5),
        statistic: 'Sum',
      }).createAlarm(this, 'ShadowReadMismatch', {
        alarmDescription: 'Shadow reads found V2 answers that differ from V1',
        threshold: 0,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );
    if (props.backendMetrics) this.addBackendAlarms(props.backendMetrics);
    if (props.v2RdsInstanceId) {
      this.addDatabaseAlarms(
        props.v2RdsInstanceId,
        props.databaseCpuPercent ?? DEFAULT_DB_CPU_THRESHOLD_PERCENT,
        props.databaseConnections ?? DEFAULT_DB_CONNECTIONS_THRESHOLD,
      );
    }

    this.health = new cloudwatch.CompositeAlarm(this, 'Health', {
      compositeAlarmName: `${Stack.of(this).stackName}-${HEALTH_ALARM_NAME}`,
      alarmDescription: 'The migration is unhealthy: V2 read traffic is rolled back to 0 automatically',
      alarmRule: cloudwatch.AlarmRule.anyOf(...this.alarms),
    });
    this.health.addAlarmAction(new cwActions.SnsAction(this.topic));
    this.health.addOkAction(new cwActions.SnsAction(this.topic));
  }

  /**
   * Starts `stateMachine` (the Rollback state machine) whenever MigrationHealth goes to ALARM,
   * with input `{"reason": "alarm:<alarm name>", "actor": "alarm"}`. Failed starts are retried
   * by EventBridge, and the ones that still fail land in a DLQ that notifies the topic.
   */
  public routeAlarmToRollback(stateMachine: sfn.IStateMachine): events.Rule {
    if (this.rollbackRule) {
      throw new Error(
        `${this.node.path}: routeAlarmToRollback was already called; there is one rollback route`,
      );
    }
    const failedStarts = new sqs.Queue(this, 'RollbackStartFailures', {
      enforceSSL: true,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      retentionPeriod: Duration.days(14),
    });
    Validations.of(failedStarts).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason:
        'This queue is itself the dead-letter queue of the EventBridge rollback target; ' +
        'cdk-nag only recognises SQS redrive DLQs',
    });
    this.rollbackRule = new events.Rule(this, 'RollbackOnAlarm', {
      description: `Rolls V2 read traffic back when ${HEALTH_ALARM_NAME} goes to ALARM`,
      eventPattern: {
        source: ['aws.cloudwatch'],
        detailType: ['CloudWatch Alarm State Change'],
        resources: [this.health.alarmArn],
        detail: { state: { value: ['ALARM'] } },
      },
    });
    this.rollbackRule.addTarget(
      new targets.SfnStateMachine(stateMachine, {
        input: events.RuleTargetInput.fromObject({
          reason: `alarm:${events.EventField.fromPath('$.detail.alarmName')}`,
          actor: ALARM_ACTOR,
        }),
        deadLetterQueue: failedStarts,
        retryAttempts: 185,
        maxEventAge: Duration.hours(24),
      }),
    );
    const failedStartsAlarm = this.queueNotEmpty(
      failedStarts,
      'RollbackStartFailed',
      'The automatic rollback could not be started: roll back from the console NOW',
    );
    failedStartsAlarm.addAlarmAction(new cwActions.SnsAction(this.topic));
    return this.rollbackRule;
  }

  /** An alarm that fires as soon as `queue` holds a message (a dead-letter queue). */
  private queueNotEmpty(queue: sqs.IQueue, id: string, description: string): cloudwatch.Alarm {
    return queue
      .metricApproximateNumberOfMessagesVisible({ period: ALARM_PERIOD, statistic: 'Maximum' })
      .createAlarm(this, id, {
        alarmDescription: description,
        threshold: 0,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
  }

  private createTopic(): sns.Topic {
    // CloudWatch cannot publish to a topic encrypted with the AWS-managed SNS key, so it gets its own.
    const key = new kms.Key(this, 'TopicKey', {
      description: 'Encrypts the migration alarm topic',
      enableKeyRotation: true,
    });
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        resources: ['*'],
        conditions: { StringEquals: { 'aws:SourceAccount': Stack.of(this).account } },
      }),
    );
    return new sns.Topic(this, 'Topic', {
      displayName: 'IoT V1 to V2 migration alarms',
      masterKey: key,
      enforceSSL: true,
    });
  }

  private addBackendAlarms(backend: BackendMetricsProps): void {
    const metric = (metricName: string, statistic: string) =>
      new cloudwatch.Metric({
        namespace: backend.namespace,
        metricName,
        dimensionsMap: { ...backend.dimensions },
        period: ALARM_PERIOD,
        statistic,
      });
    this.alarms.push(
      metric(backend.errorRate.metricName, 'Average').createAlarm(this, 'BackendErrorRate', {
        alarmDescription: 'The IoT backend error rate is above its threshold',
        threshold: backend.errorRate.threshold,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 3,
        datapointsToAlarm: 2,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );
    this.alarms.push(
      metric(backend.p99Latency.metricName, 'p99').createAlarm(this, 'BackendP99Latency', {
        alarmDescription: 'The IoT backend p99 latency is above its threshold',
        threshold: backend.p99Latency.threshold,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 3,
        datapointsToAlarm: 2,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );
  }

  private addDatabaseAlarms(instanceId: string, cpuPercent: number, connections: number): void {
    const metric = (metricName: string) =>
      new cloudwatch.Metric({
        namespace: 'AWS/RDS',
        metricName,
        dimensionsMap: { DBInstanceIdentifier: instanceId },
        period: ALARM_PERIOD,
        statistic: 'Maximum',
      });
    this.alarms.push(
      metric('CPUUtilization').createAlarm(this, 'V2DatabaseCpu', {
        alarmDescription: 'The V2 database CPU is saturated',
        threshold: cpuPercent,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 5,
        datapointsToAlarm: 3,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );
    this.alarms.push(
      metric('DatabaseConnections').createAlarm(this, 'V2DatabaseConnections', {
        alarmDescription: 'The V2 database has too many connections',
        threshold: connections,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 3,
        datapointsToAlarm: 2,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );
  }
}
