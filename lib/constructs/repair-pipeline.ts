import { Duration } from 'aws-cdk-lib';
import type * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambdaEvents from 'aws-cdk-lib/aws-lambda-event-sources';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { join } from 'node:path';
import { DEFAULT_MAX_RECEIVE_COUNT, MIN_EVENT_SOURCE_CONCURRENCY } from '../config';
import { DLQ_RETENTION, QUEUE_RETENTION, VISIBILITY_TIMEOUT_FACTOR } from './backfill-pipeline';
import { MigrationFunction, PROJECT_ROOT } from './migration-function';

/** The repair worker's handler file. */
export const REPAIR_WORKER_ENTRY = join(PROJECT_ROOT, 'lambdas', 'handlers', 'repair-worker.ts');
/** The repair worker's timeout: a batch re-syncs a few single rows, each in a few statements. */
export const DEFAULT_REPAIR_WORKER_TIMEOUT = Duration.minutes(1);
/** Repair workers running at once: repairs are rare and small, and must not crowd the databases. */
export const DEFAULT_REPAIR_CONCURRENCY = MIN_EVENT_SOURCE_CONCURRENCY;
/** Repair messages per invocation (each names one row, repaired one after the other). */
export const DEFAULT_REPAIR_BATCH_SIZE = 10;

/** Props of the RepairPipeline. */
export interface RepairPipelineProps {
  /** The VPC in which the repair worker reaches the databases. */
  readonly vpc: ec2.IVpc;
  /** The repair worker's subnets. */
  readonly vpcSubnets: ec2.SubnetSelection;
  /** The repair worker's security groups (allowed into both databases). */
  readonly securityGroups: readonly ec2.ISecurityGroup[];
  /** Non-secret runtime configuration for the repair worker (see MigrationFunctionProps.environment). */
  readonly environment: Readonly<Record<string, string>>;
  /** The database secrets the repair worker may read (exactly these, nothing else). */
  readonly databaseSecrets: readonly secretsmanager.ISecret[];
  /**
   * The repair worker's timeout.
   * @default DEFAULT_REPAIR_WORKER_TIMEOUT
   */
  readonly workerTimeout?: Duration;
  /**
   * The repair queue's visibility timeout; checked at synth time to be at least
   * VISIBILITY_TIMEOUT_FACTOR × workerTimeout.
   * @default VISIBILITY_TIMEOUT_FACTOR × workerTimeout
   */
  readonly visibilityTimeout?: Duration;
  /**
   * Receives of a repair message before it moves to the repair DLQ.
   * @default DEFAULT_MAX_RECEIVE_COUNT
   */
  readonly maxReceiveCount?: number;
  /**
   * The event source's maximum concurrency (repair workers at once), 2–1000.
   * @default DEFAULT_REPAIR_CONCURRENCY
   */
  readonly maxConcurrency?: number;
  /**
   * Messages per invocation, 1–10.
   * @default DEFAULT_REPAIR_BATCH_SIZE
   */
  readonly batchSize?: number;
}

/**
 * The repair path of the backend's dual writes: the repair queue (SSL enforced, SQS-managed
 * encryption) that the backend's DualWriter sends a `repair-row` message to when its V2 write
 * fails, its DLQ, and the repair worker (client/repair-worker.ts) that re-syncs each named row
 * from V1 to V2, fed by an SQS event source with partial batch responses and bounded
 * concurrency. `grantSend` lets the backend's role send to the queue.
 */
export class RepairPipeline extends Construct {
  /** The queue of `repair-row` messages (its URL is the backend's REPAIR_QUEUE_URL). */
  public readonly queue: sqs.Queue;
  /** Where repairs that failed maxReceiveCount times end up. */
  public readonly deadLetterQueue: sqs.Queue;
  /** The repair worker function (with its log group). */
  public readonly worker: MigrationFunction;
  /** The event source mapping the queue to the repair worker. */
  public readonly eventSource: lambdaEvents.SqsEventSource;

  constructor(scope: Construct, id: string, props: RepairPipelineProps) {
    super(scope, id);
    const workerTimeout = props.workerTimeout ?? DEFAULT_REPAIR_WORKER_TIMEOUT;
    const visibilityTimeout =
      props.visibilityTimeout ?? Duration.seconds(workerTimeout.toSeconds() * VISIBILITY_TIMEOUT_FACTOR);
    const maxReceiveCount = props.maxReceiveCount ?? DEFAULT_MAX_RECEIVE_COUNT;
    const maxConcurrency = props.maxConcurrency ?? DEFAULT_REPAIR_CONCURRENCY;
    const batchSize = props.batchSize ?? DEFAULT_REPAIR_BATCH_SIZE;
    this.check(workerTimeout, visibilityTimeout, maxReceiveCount, maxConcurrency, batchSize);

    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      enforceSSL: true,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      retentionPeriod: DLQ_RETENTION,
    });
    this.queue = new sqs.Queue(this, 'Queue', {
      enforceSSL: true,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      retentionPeriod: QUEUE_RETENTION,
      visibilityTimeout,
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount },
    });

    this.worker = new MigrationFunction(this, 'Worker', {
      entry: REPAIR_WORKER_ENTRY,
      description: 'Re-syncs rows whose V2 dual write failed from V1 to V2 (idempotent)',
      vpc: props.vpc,
      vpcSubnets: props.vpcSubnets,
      securityGroups: props.securityGroups,
      environment: props.environment,
      timeout: workerTimeout,
    });
    for (const secret of props.databaseSecrets) secret.grantRead(this.worker.function);

    this.eventSource = new lambdaEvents.SqsEventSource(this.queue, {
      batchSize,
      maxConcurrency,
      reportBatchItemFailures: true,
    });
    this.worker.function.addEventSource(this.eventSource);
  }

  /**
   * Lets `grantee` (the IoT backend's role) send repair messages: sqs:SendMessage (which also
   * authorizes SendMessageBatch) on the repair queue, and nothing else.
   */
  public grantSend(grantee: iam.IGrantable): iam.Grant {
    return iam.Grant.addToPrincipal({
      grantee,
      actions: ['sqs:SendMessage'],
      resourceArns: [this.queue.queueArn],
    });
  }

  private check(
    workerTimeout: Duration,
    visibilityTimeout: Duration,
    maxReceiveCount: number,
    maxConcurrency: number,
    batchSize: number,
  ): void {
    const path = this.node.path;
    const minimum = workerTimeout.toSeconds() * VISIBILITY_TIMEOUT_FACTOR;
    if (visibilityTimeout.toSeconds() < minimum) {
      throw new Error(
        `${path}: visibilityTimeout (${visibilityTimeout.toSeconds()} s) must be at least ` +
          `${VISIBILITY_TIMEOUT_FACTOR} × workerTimeout (${workerTimeout.toSeconds()} s) = ${minimum} s, ` +
          'so a message is not redelivered while a repair worker (and its retries) may still hold it ' +
          '(cdk-nag LambdaEventSourceSQSVisibilityTimeout)',
      );
    }
    if (visibilityTimeout.toSeconds() > 43_200) {
      throw new Error(`${path}: visibilityTimeout must be at most 12 hours (SQS limit)`);
    }
    if (!Number.isInteger(maxReceiveCount) || maxReceiveCount < 1 || maxReceiveCount > 1000) {
      throw new Error(`${path}: maxReceiveCount must be an integer from 1 to 1000 (got ${maxReceiveCount})`);
    }
    if (
      !Number.isInteger(maxConcurrency) ||
      maxConcurrency < MIN_EVENT_SOURCE_CONCURRENCY ||
      maxConcurrency > 1000
    ) {
      throw new Error(
        `${path}: maxConcurrency must be an integer from ${MIN_EVENT_SOURCE_CONCURRENCY} to 1000 (got ${maxConcurrency})`,
      );
    }
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10) {
      throw new Error(`${path}: batchSize must be an integer from 1 to 10 (got ${batchSize})`);
    }
  }
}
