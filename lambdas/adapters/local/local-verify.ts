import {
  concludeRun,
  startVerification,
  verificationProgress,
  type VerificationReport,
  type VerifyDeps,
} from '../../core/verify';
import { VerificationFailedError } from '../../core/errors';
import type { MappedTable } from '../../core/mapping';
import type { WorkerHooks } from '../../core/worker';
import type { BatchHandler } from '../../ports/queue';
import { startLocalWorkers } from './local-workers';

export interface LocalVerifyOptions {
  since?: Date;
  /** Only these tables (default: all). */
  tables?: MappedTable[];
  /** Rows per table deep-compared column by column (default 100). */
  sampleSize?: number;
  /** Re-copy mismatched windows and check them again (default true). */
  repair?: boolean;
  maxRepairAttempts?: number;
  /** How long a mismatch may be a write in flight (see DEFAULT_RECHECK_DELAY_MS). */
  recheckDelayMs?: number;
  /** The side repairs take as the truth (V2 once it is the write primary). @default 'v1' */
  truth?: 'v1' | 'v2';
  pollMs?: number;
  hooks?: WorkerHooks;
  wrapHandler?: (handler: BatchHandler) => BatchHandler;
  onProgress?: (p: {
    slicesDone: number;
    slices: number;
    windowsChecked: number;
    windowsMismatched: number;
  }) => void | Promise<void>;
}

const describeFailure = (error: unknown) =>
  error instanceof Error
    ? `${error.name}: ${error.message}`
    : error === undefined
      ? 'no error recorded'
      : String(error);

/**
 * Phase 3 in-process: slices fanned out through a LocalQueue to the real worker at the
 * configured concurrency, then the report (mismatches explained row by row, a sample compared
 * column by column), then repair of mismatched windows and re-verification.
 */
export async function runVerificationLocally(
  deps: VerifyDeps,
  options: LocalVerifyOptions = {},
): Promise<VerificationReport> {
  const { queue, lastErrors, stop } = startLocalWorkers(deps, options);
  let runId: number;
  try {
    ({ runId } = await startVerification(
      { ...deps, queue },
      { since: options.since, tables: options.tables },
    ));
    // Every slice is queued: once the queue is idle, each one has finished or been dead-lettered.
    const idle = queue.whenIdle().catch(() => undefined);
    for (;;) {
      // Queue state first: when it was idle, every slice had finished before progress is read.
      const stats = queue.stats();
      const progress = await verificationProgress(deps.v2, deps.config, runId);
      // An async hook is awaited: what it does happens before the run goes on.
      await options.onProgress?.(progress);
      if (progress.complete) break;
      if (stats.queued === 0 && stats.inFlight === 0 && stats.invocations === 0) {
        const failed = queue.dlq();
        throw new VerificationFailedError(
          `${failed.length} verification slice(s) could not be checked: ${failed.map((f) => describeFailure(f.lastError ?? lastErrors.get(f.messageId))).join('; ')}`,
          [],
        );
      }
      // Progress every pollMs, and at once when the last slice is done.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        idle,
        new Promise((resolve) => (timer = setTimeout(resolve, options.pollMs ?? 50))),
      ]);
      clearTimeout(timer);
    }
  } finally {
    await stop();
  }
  return concludeRun(deps, runId, {
    sampleSize: options.sampleSize ?? 100,
    repair: options.repair,
    maxRepairAttempts: options.maxRepairAttempts,
    recheckDelayMs: options.recheckDelayMs,
    truth: options.truth,
  });
}
