import type { BackfillProgress } from '../../core/backfill';
import { pollBackfill, pollVerify, startBackfill, startVerify, type VerifyPoll } from '../../core/phases';
import type { MigrationContext } from '../../core/migration-state';
import { workerBatchHandler, type WorkerHooks } from '../../core/worker';
import type { BatchHandler } from '../../ports/queue';
import { LocalQueue } from './local-queue';

export interface LocalWorkers {
  queue: LocalQueue;
  stop(): Promise<void>;
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
    visibilityTimeoutMs: options.visibilityTimeoutMs ?? 300_000,
    maxReceiveCount: ctx.config.batch.maxReceiveCount,
    concurrency: ctx.config.batch.concurrency,
    retryDelayMs: 200,
    batchSize: 1,
  });
  const handler = workerBatchHandler(ctx, options.hooks);
  queue.start(options.wrapHandler ? options.wrapHandler(handler) : handler);
  return { queue, stop: () => queue.stop() };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Phase 2 in-process: start, then poll until done (as the state machine's Wait loop does). */
export async function runBackfillPhase(
  ctx: MigrationContext,
  workers: LocalWorkers,
  options: { pollMs?: number; onProgress?: (p: BackfillProgress) => void } = {},
): Promise<BackfillProgress> {
  let progress = await startBackfill({ ...ctx, queue: workers.queue });
  while (!progress.complete) {
    await sleep(options.pollMs ?? 100);
    progress = await pollBackfill({ ...ctx, queue: workers.queue });
    options.onProgress?.(progress);
  }
  return progress;
}

/** Phase 3 in-process: start, poll until every slice is checked, then report and repair. */
export async function runVerifyPhase(
  ctx: MigrationContext,
  workers: LocalWorkers,
  options: { pollMs?: number } = {},
): Promise<VerifyPoll> {
  const { runId } = await startVerify({ ...ctx, queue: workers.queue });
  for (;;) {
    const poll = await pollVerify(ctx, runId);
    if (poll.complete) return poll;
    await sleep(options.pollMs ?? 100);
  }
}
