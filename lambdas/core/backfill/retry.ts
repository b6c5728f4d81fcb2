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
      if (last || !(error instanceof TransientDatabaseError)) throw error;
      options.onRetry?.(attempt, error);
      await sleep(backoff(baseMs, attempt));
    }
  }
}

/** Jittered exponential backoff: between half and all of base × 2^(attempt−1). */
export function backoff(baseMs: number, attempt: number): number {
  const ceiling = baseMs * 2 ** (attempt - 1);
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}
