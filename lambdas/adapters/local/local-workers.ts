import type { MigrationContext } from '../../core/migration-state';
import { workerBatchHandler, type WorkerHooks } from '../../core/worker';
import type { BatchHandler } from '../../ports/queue';
import { LocalQueue } from './local-queue';

/** How long a local worker may hold a message before it is delivered again. */
export const DEFAULT_LOCAL_VISIBILITY_MS = 300_000;

export interface LocalWorkers {
  queue: LocalQueue;
  /** The last error of each message whose handling failed, by message id (for reports). */
  lastErrors: Map<string, Error>;
  stop(): Promise<void>;
}

/**
 * The backend's repair queue on one machine (SQS's stand-in): one message at a time, 30 s
 * visibility, a failed message delivered again after `retryDelayMs` until `maxReceiveCount`.
 * Its worker is started by whoever runs the repairs.
 */
export function localRepairQueue(
  options: { maxReceiveCount?: number; retryDelayMs?: number } = {},
): LocalQueue {
  return new LocalQueue({
    visibilityTimeoutMs: 30_000,
    maxReceiveCount: options.maxReceiveCount ?? 10,
    concurrency: 1,
    retryDelayMs: options.retryDelayMs ?? 500,
  });
}

/** A LocalQueue served by the real worker at the configured concurrency (Lambda's stand-in). */
export function startLocalWorkers(
  ctx: Pick<MigrationContext, 'v1' | 'v2' | 'config'>,
  options: {
    hooks?: WorkerHooks;
    wrapHandler?: (h: BatchHandler) => BatchHandler;
    visibilityTimeoutMs?: number;
  } = {},
): LocalWorkers {
  const queue = new LocalQueue({
    visibilityTimeoutMs: options.visibilityTimeoutMs ?? DEFAULT_LOCAL_VISIBILITY_MS,
    maxReceiveCount: ctx.config.batch.maxReceiveCount,
    concurrency: ctx.config.batch.concurrency,
    retryDelayMs: 200,
    batchSize: 1,
  });
  const lastErrors = new Map<string, Error>();
  const handler = workerBatchHandler(ctx, {
    ...options.hooks,
    onError: (record, error) => {
      lastErrors.set(record.messageId, error);
      options.hooks?.onError?.(record, error);
    },
  });
  queue.start(options.wrapHandler ? options.wrapHandler(handler) : handler);
  return { queue, lastErrors, stop: () => queue.stop() };
}
