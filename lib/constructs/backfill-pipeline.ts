import type { Construct } from 'constructs';
import { join } from 'node:path';
import { PROJECT_ROOT } from './migration-function';
import { QueueWorker, type QueueWorkerOptions } from './queue-worker';

export { DLQ_RETENTION, QUEUE_RETENTION, VISIBILITY_TIMEOUT_FACTOR } from './queue-worker';

/** The worker's handler file. */
export const WORKER_ENTRY = join(PROJECT_ROOT, 'lambdas', 'handlers', 'backfill-worker.ts');

/**
 * Props of the BackfillPipeline: the QueueWorker options, with their defaults
 * (workerTimeout DEFAULT_FUNCTION_TIMEOUT, maxConcurrency DEFAULT_WORKER_CONCURRENCY — workers
 * copying at once — and batchSize DEFAULT_WORKER_BATCH_SIZE).
 */
export type BackfillPipelineProps = QueueWorkerOptions;

/**
 * The backfill pipeline: the worker queue (SSL enforced, SQS-managed encryption) with its DLQ,
 * the worker function, and the SQS event source with partial batch responses and bounded
 * concurrency, so the databases are never overwhelmed. The queue holds window messages; windows
 * that failed maxReceiveCount times end up in the DLQ.
 */
export class BackfillPipeline extends QueueWorker {
  constructor(scope: Construct, id: string, props: BackfillPipelineProps) {
    super(scope, id, {
      ...props,
      entry: WORKER_ENTRY,
      description: 'Copies backfill windows V1 → V2 (one transaction per window, idempotent)',
    });
  }
}
