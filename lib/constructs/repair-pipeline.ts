import { Duration } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type { Construct } from 'constructs';
import { join } from 'node:path';
import { MIN_EVENT_SOURCE_CONCURRENCY } from '../config';
import { PROJECT_ROOT } from './migration-function';
import { QueueWorker, type QueueWorkerOptions } from './queue-worker';

/** The repair worker's handler file. */
export const REPAIR_WORKER_ENTRY = join(PROJECT_ROOT, 'lambdas', 'handlers', 'repair-worker.ts');
/** The repair worker's timeout: a batch re-syncs a few single rows, each in a few statements. */
export const DEFAULT_REPAIR_WORKER_TIMEOUT = Duration.minutes(1);
/** Repair workers running at once: repairs are rare and small, and must not crowd the databases. */
export const DEFAULT_REPAIR_CONCURRENCY = MIN_EVENT_SOURCE_CONCURRENCY;
/** Repair messages per invocation (each names one row, repaired one after the other). */
export const DEFAULT_REPAIR_BATCH_SIZE = 10;

/**
 * Props of the RepairPipeline: the QueueWorker options for the repair worker and its queue
 * (maxReceiveCount: receives of a repair message before it moves to the repair DLQ), with the
 * repair defaults below.
 */
export interface RepairPipelineProps extends QueueWorkerOptions {
  /**
   * The repair worker's timeout.
   * @default DEFAULT_REPAIR_WORKER_TIMEOUT
   */
  readonly workerTimeout?: Duration;
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
 * concurrency. The queue's URL is the backend's REPAIR_QUEUE_URL; repairs that failed
 * maxReceiveCount times end up in the DLQ. `grantSend` lets the backend's role send to the queue.
 */
export class RepairPipeline extends QueueWorker {
  constructor(scope: Construct, id: string, props: RepairPipelineProps) {
    super(scope, id, {
      ...props,
      workerTimeout: props.workerTimeout ?? DEFAULT_REPAIR_WORKER_TIMEOUT,
      maxConcurrency: props.maxConcurrency ?? DEFAULT_REPAIR_CONCURRENCY,
      batchSize: props.batchSize ?? DEFAULT_REPAIR_BATCH_SIZE,
      entry: REPAIR_WORKER_ENTRY,
      description: 'Re-syncs rows whose V2 dual write failed from V1 to V2 (idempotent)',
      workerName: 'repair worker',
    });
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
}
