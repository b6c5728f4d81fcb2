import { controlSchema } from '../db';
import { TransientDatabaseError } from '../errors';
import { copyWindow, type BackfillDeps, type CopyResult } from './copy';

/** Copies of one window within one delivery, at most. @default 4 */
export const DEFAULT_COPY_ATTEMPTS = 4;
/** First pause before copying again after a lost session (doubling, with jitter). @default 250 ms */
export const DEFAULT_RETRY_BASE_MS = 250;

export interface RideOutOptions {
  attempts?: number;
  baseMs?: number;
  sleep?: (ms: number) => Promise<void>;
  /** Called before each new attempt (progress, logs, tests). */
  onRetry?: (attempt: number, error: Error) => void;
}

/**
 * Copies a window, riding out a terminated session (an administrator's or a failover's
 * `pg_terminate_backend`, a dropped connection, a deadlock or a lock timeout): such a failure
 * (TransientDatabaseError) is tried again within the same delivery, after a jittered backoff,
 * on a fresh connection. Any other failure, or the last attempt's, is thrown as it is, so the
 * queue redelivers the window or, on its last delivery, moves it to the DLQ. A copy is
 * idempotent, so trying again never duplicates a row.
 */
export async function copyRidingOutFaults(
  deps: BackfillDeps,
  windowId: number,
  receiveCount: number,
  options: RideOutOptions = {},
): Promise<CopyResult & { attempts: number }> {
  const attempts = options.attempts ?? DEFAULT_COPY_ATTEMPTS;
  const baseMs = options.baseMs ?? DEFAULT_RETRY_BASE_MS;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  for (let attempt = 1; ; attempt++) {
    const last = attempt >= attempts;
    try {
      // Only the last attempt of the last delivery may mark the window failed (it goes to the DLQ).
      const result = await copyWindow(deps, windowId, { receiveCount: last ? receiveCount : 0 });
      return { ...result, attempts: attempt };
    } catch (error) {
      if (last) throw error;
      if (!(error instanceof TransientDatabaseError)) {
        // Not worth another attempt: on the last delivery the window goes to the DLQ, so it is
        // marked failed, visibly (copyWindow did not, as it was not told this attempt was the last).
        if (receiveCount >= deps.config.batch.maxReceiveCount) await markFailed(deps, windowId, error);
        throw error;
      }
      options.onRetry?.(attempt, error);
      await sleep(backoff(baseMs, attempt));
    }
  }
}

async function markFailed(deps: BackfillDeps, windowId: number, error: unknown): Promise<void> {
  const named = error as Error;
  await deps.v2
    .query(
      `UPDATE ${controlSchema(deps.config)}.windows SET status = 'failed', last_error = $2 WHERE id = $1 AND status <> 'done'`,
      [windowId, `${named.name}: ${named.message}`],
    )
    .catch(() => undefined);
}

/** Jittered exponential backoff: between half and all of base × 2^(attempt−1). */
export function backoff(baseMs: number, attempt: number): number {
  const ceiling = baseMs * 2 ** (attempt - 1);
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}
