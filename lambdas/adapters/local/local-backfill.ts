import { controlSchema } from '../../core/db';
import { BackfillFailedError } from '../../core/errors';
import {
  backfillProgress,
  buildDeferredIndexes,
  buildReadyPartitionIndexes,
  planBackfill,
  pumpBackfill,
  type BackfillDeps,
  type BackfillProgress,
} from '../../core/backfill';
import type { WorkerHooks } from '../../core/worker';
import type { BatchHandler } from '../../ports/queue';
import { startLocalWorkers } from './local-workers';

export interface LocalBackfillOptions {
  /** How often the driver pumps the next stage and reports progress (the state machine's Wait). */
  pollMs?: number;
  onProgress?: (progress: BackfillProgress) => void;
  hooks?: WorkerHooks;
  /** Wraps the worker, e.g. to inject faults. */
  wrapHandler?: (handler: BatchHandler) => BatchHandler;
  visibilityTimeoutMs?: number;
}

/** Puts windows marked queued or running, but with no message left, back to pending. */
async function requeueOrphans(deps: BackfillDeps): Promise<number> {
  const { rowCount } = await deps.v2.query(
    `UPDATE ${controlSchema(deps.config)}.windows SET status = 'pending' WHERE status IN ('queued', 'running')`,
  );
  return rowCount ?? 0;
}

/** The backfill's end, as the state machine's: the indexes deferred for the load are built. */
async function finish(deps: BackfillDeps, progress: BackfillProgress): Promise<BackfillProgress> {
  await buildDeferredIndexes(deps.v2, deps.config);
  return progress;
}

/**
 * Runs the whole backfill in-process: plan, then pump stages through a LocalQueue served by the
 * real worker at the configured concurrency, until every window is done and
 * the deferred indexes are built. Throws
 * BackfillFailedError when windows end in the DLQ.
 */
export async function runBackfillLocally(
  deps: BackfillDeps,
  options: LocalBackfillOptions = {},
): Promise<BackfillProgress> {
  const { queue, stop } = startLocalWorkers(deps, options);
  let resends = 0;
  try {
    await planBackfill(deps);
    for (;;) {
      const { progress } = await pumpBackfill({ ...deps, queue });
      options.onProgress?.(progress);
      if (progress.complete) return await finish(deps, progress);
      // Partitions whose windows are all done get their indexes while the rest copies.
      if ((await buildReadyPartitionIndexes(deps.v2, deps.config, 1)) > 0) continue;
      const stats = queue.stats();
      // Paused by ops: the workers gave their windows back; wait for the resume.
      const idle = stats.queued === 0 && stats.inFlight === 0 && stats.invocations === 0;
      if (idle && progress.throttle.paused) {
        await new Promise((resolve) => setTimeout(resolve, options.pollMs ?? 100));
        continue;
      }
      if (idle) {
        // Nothing left to run: either the next pump enqueues a stage, or windows whose message
        // is gone (a crash between marking and sending) are sent again, or windows failed.
        const after = await pumpBackfill({ ...deps, queue });
        if (after.enqueued === 0) {
          const final = await backfillProgress(deps.v2, deps.config);
          if (final.complete) return await finish(deps, final);
          const orphans = final.windowsFailed === 0 && resends < 3 ? await requeueOrphans(deps) : 0;
          if (orphans === 0) throw new BackfillFailedError(final.failures);
          resends++;
        }
        continue;
      }
      await new Promise((resolve) => setTimeout(resolve, options.pollMs ?? 100));
    }
  } finally {
    await stop();
  }
}
