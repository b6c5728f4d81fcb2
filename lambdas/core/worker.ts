import type { Pool } from 'pg';
import { partialBatchHandler, type BatchHandler, type QueueRecord } from '../ports/queue';
import { type BackfillDeps, type CopyResult } from './backfill';
import { copyRidingOutFaults, type RideOutOptions } from './backfill/retry';
import { splitWindow } from './backfill/split';
import {
  awaitTurn,
  deferWork,
  sampleWhileWorking,
  windowRowsNow,
  type ThrottleSettings,
} from './backfill/throttle';
import type { ThrottleState } from './backfill/control';
import { controlSchema } from './db';
import { parseWorkMessage, type WorkMessage } from './work-messages';
import { verifySlice } from './verify';

/** How the worker was held back before its work (the progress line, report and metrics show it). */
export interface ThrottleNote {
  state: ThrottleState;
  cause: string | null;
  waitedMs: number;
  /** The V1 probe's commit round trip, when it ran. */
  commitMs?: number | null;
}

export type WorkResult =
  | ({ type: 'copy-window'; attempts: number; throttle: ThrottleNote } & CopyResult)
  | { type: 'verify-slice'; sliceId: number; windows: number; mismatched: number; throttle: ThrottleNote }
  /** Paused, or held back longer than the throttle's wait: the work went back to be sent again. */
  | { type: 'deferred'; work: WorkMessage; throttle: ThrottleNote };

export interface WorkerHooks {
  onDone?: (record: QueueRecord, result: WorkResult) => void;
  onError?: (record: QueueRecord, error: Error) => void;
}

/** What the worker runs with: the databases and configuration, and how it is throttled. */
export interface WorkerDeps extends BackfillDeps {
  /** Thresholds and waits of the automatic throttle. @default config.throttle */
  throttle?: ThrottleSettings;
  /** How a terminated session is ridden out within a delivery. */
  retry?: RideOutOptions;
  /** How the worker waits for its turn (tests record the waits instead). */
  sleep?: (ms: number) => Promise<void>;
}

/** V1 rows the work reads: the window's, or the sum of the slice's windows'. */
async function workRows(v2: Pool, deps: BackfillDeps, message: WorkMessage): Promise<number> {
  const ctl = controlSchema(deps.config);
  const { rows } =
    message.type === 'copy-window'
      ? await v2.query<{ n: string | null }>(`SELECT expected_rows AS n FROM ${ctl}.windows WHERE id = $1`, [
          message.windowId,
        ])
      : await v2.query<{ n: string | null }>(
          `SELECT sum(w.expected_rows) AS n FROM ${ctl}.verification_slices s JOIN ${ctl}.windows w ON w.id = ANY(s.window_ids) WHERE s.id = $1`,
          [message.sliceId],
        );
  return Number(rows[0]?.n ?? 0);
}

/**
 * What the SQS-triggered worker (and the local queue) runs for one record: a window to copy,
 * or a verification slice to check, after its turn under the backfill control (paused work and
 * work held back too long go back to be sent again; a window larger than ops' window size is
 * split first). A copy rides out a terminated session within its delivery. A bad body gets
 * InvalidMessageError.
 */
export async function handleWorkMessage(
  deps: WorkerDeps,
  body: string,
  receiveCount = 1,
): Promise<WorkResult> {
  const message = parseWorkMessage(body);
  const settings = deps.throttle ?? deps.config.throttle;
  const turn = await awaitTurn(deps, await workRows(deps.v2, deps, message), { settings, sleep: deps.sleep });
  const throttle: ThrottleNote = {
    state: turn.state,
    cause: turn.cause,
    waitedMs: turn.waitedMs,
    ...(turn.probe ? { commitMs: turn.probe.commitMs } : {}),
  };
  if (!turn.go) {
    await deferWork(deps.v2, deps.config, message);
    return { type: 'deferred', work: message, throttle };
  }
  if (message.type === 'copy-window') {
    const windowRows = windowRowsNow(turn.control, settings);
    if (windowRows !== null) await splitWindow(deps, message.windowId, windowRows);
    const sampler = turn.control.autoThrottle ? sampleWhileWorking(deps, settings) : undefined;
    let copied;
    try {
      copied = await copyRidingOutFaults(deps, message.windowId, receiveCount, deps.retry);
    } finally {
      await sampler?.stop();
    }
    return { type: 'copy-window', ...copied, throttle };
  }
  return {
    type: 'verify-slice',
    sliceId: message.sliceId,
    ...(await verifySlice(deps, message.sliceId)),
    throttle,
  };
}

/** The worker as a batch handler with SQS partial batch responses (see partialBatchHandler). */
export function workerBatchHandler(deps: WorkerDeps, hooks: WorkerHooks = {}): BatchHandler {
  return partialBatchHandler((record) => handleWorkMessage(deps, record.body, record.receiveCount), hooks);
}
