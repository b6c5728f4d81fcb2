import { Duration } from 'aws-cdk-lib';
import type * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as lambdaEvents from 'aws-cdk-lib/aws-lambda-event-sources';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import {
  DEFAULT_MAX_RECEIVE_COUNT,
  DEFAULT_WORKER_BATCH_SIZE,
  MIN_EVENT_SOURCE_CONCURRENCY,
} from '../config';
import { DEFAULT_WORKER_CONCURRENCY } from '../../lambdas/core/config';
import { DEFAULT_FUNCTION_TIMEOUT, MigrationFunction } from './migration-function';

/** The queue's visibility timeout is at least this many times the worker's timeout (cdk-nag, AWS guidance). */
export const VISIBILITY_TIMEOUT_FACTOR = 6;
/** How long failed messages stay in the DLQ: SQS's maximum, so nothing expires unseen. */
export const DLQ_RETENTION = Duration.days(14);
/** How long messages stay in the worker queue: SQS's maximum. */
export const QUEUE_RETENTION = Duration.days(14);

/** What a user of a queue-fed worker chooses: where the worker runs, what it reads, how it is fed. */
export interface QueueWorkerOptions {
  /** The VPC in which the worker reaches the databases. */
  readonly vpc: ec2.IVpc;
  /** The worker's subnets. */
  readonly vpcSubnets: ec2.SubnetSelection;
  /** The worker's security groups (allowed into both databases). */
  readonly securityGroups: readonly ec2.ISecurityGroup[];
  /** Non-secret runtime configuration for the worker (see MigrationFunctionProps.environment). */
  readonly environment: Readonly<Record<string, string>>;
  /** The database secrets the worker may read (exactly these, nothing else). */
  readonly databaseSecrets: readonly secretsmanager.ISecret[];
  /**
   * The worker's timeout.
   * @default DEFAULT_FUNCTION_TIMEOUT
   */
  readonly workerTimeout?: Duration;
  /**
   * The worker queue's visibility timeout; checked at synth time to be at least
   * VISIBILITY_TIMEOUT_FACTOR × workerTimeout.
   * @default VISIBILITY_TIMEOUT_FACTOR × workerTimeout
   */
  readonly visibilityTimeout?: Duration;
  /**
   * Receives of a message before it moves to the DLQ.
   * @default DEFAULT_MAX_RECEIVE_COUNT
   */
  readonly maxReceiveCount?: number;
  /**
   * The event source's maximum concurrency (workers at once), 2–1000.
   * @default DEFAULT_WORKER_CONCURRENCY
   */
  readonly maxConcurrency?: number;
  /**
   * Messages per invocation, 1–10.
   * @default DEFAULT_WORKER_BATCH_SIZE
   */
  readonly batchSize?: number;
}

/** Props of a QueueWorker: the options, and which handler the worker runs. */
export interface QueueWorkerProps extends QueueWorkerOptions {
  /** The worker's handler file (TypeScript) under PROJECT_ROOT. */
  readonly entry: string;
  /** The worker function's description. */
  readonly description: string;
  /**
   * What the synth-time visibility-timeout error calls the worker.
   * @default 'worker'
   */
  readonly workerName?: string;
}

/**
 * A queue-fed worker: the queue (SSL enforced, SQS-managed encryption, redrive to the DLQ after
 * maxReceiveCount receives) with its DLQ, the worker function (a MigrationFunction that may read
 * exactly the given database secrets), and the SQS event source with partial batch responses
 * and bounded concurrency, so the databases are never overwhelmed. The props are checked at
 * synth time; an error names the field and the construct path.
 *
 * The resources are children of this construct (ids `Queue`, `DeadLetterQueue`, `Worker`), so a
 * pipeline that extends it keeps its own construct path and logical ids.
 */
export class QueueWorker extends Construct {
  /** The queue of work messages. */
  public readonly queue: sqs.Queue;
  /** Where messages that failed maxReceiveCount times end up. */
  public readonly deadLetterQueue: sqs.Queue;
  /** The worker function (with its log group). */
  public readonly worker: MigrationFunction;
  /** The event source mapping the queue to the worker. */
  public readonly eventSource: lambdaEvents.SqsEventSource;

  constructor(scope: Construct, id: string, props: QueueWorkerProps) {
    super(scope, id);
    const workerTimeout = props.workerTimeout ?? DEFAULT_FUNCTION_TIMEOUT;
    const visibilityTimeout =
      props.visibilityTimeout ?? Duration.seconds(workerTimeout.toSeconds() * VISIBILITY_TIMEOUT_FACTOR);
    const maxReceiveCount = props.maxReceiveCount ?? DEFAULT_MAX_RECEIVE_COUNT;
    const maxConcurrency = props.maxConcurrency ?? DEFAULT_WORKER_CONCURRENCY;
    const batchSize = props.batchSize ?? DEFAULT_WORKER_BATCH_SIZE;
    this.check(props.workerName ?? 'worker', {
      workerTimeout,
      visibilityTimeout,
      maxReceiveCount,
      maxConcurrency,
      batchSize,
    });

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
      entry: props.entry,
      description: props.description,
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

  private check(
    workerName: string,
    settings: {
      workerTimeout: Duration;
      visibilityTimeout: Duration;
      maxReceiveCount: number;
      maxConcurrency: number;
      batchSize: number;
    },
  ): void {
    const { workerTimeout, visibilityTimeout, maxReceiveCount, maxConcurrency, batchSize } = settings;
    const path = this.node.path;
    const minimum = workerTimeout.toSeconds() * VISIBILITY_TIMEOUT_FACTOR;
    if (visibilityTimeout.toSeconds() < minimum) {
      throw new Error(
        `${path}: visibilityTimeout (${visibilityTimeout.toSeconds()} s) must be at least ` +
          `${VISIBILITY_TIMEOUT_FACTOR} × workerTimeout (${workerTimeout.toSeconds()} s) = ${minimum} s, ` +
          `so a message is not redelivered while a ${workerName} (and its retries) may still hold it ` +
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
