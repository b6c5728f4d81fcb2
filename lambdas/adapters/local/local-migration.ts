import type { BackfillProgress } from '../../core/backfill';
import { pollBackfill, pollVerify, startBackfill, startVerify, type VerifyPoll } from '../../core/phases';
import type { MigrationContext } from '../../core/migration-state';
import type { LocalWorkers } from './local-workers';

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
    const poll = await pollVerify({ ...ctx, queue: workers.queue }, runId);
    if (poll.complete) return poll;
    await sleep(options.pollMs ?? 100);
  }
}
