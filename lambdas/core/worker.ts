import { partialBatchHandler, type BatchHandler, type QueueRecord } from '../ports/queue';
import { copyWindow, type BackfillDeps, type CopyResult } from './backfill';
import { parseWorkMessage } from './work-messages';
import { verifySlice } from './verify';

export type WorkResult =
  | ({ type: 'copy-window' } & CopyResult)
  | { type: 'verify-slice'; sliceId: number; windows: number; mismatched: number };

export interface WorkerHooks {
  onDone?: (record: QueueRecord, result: WorkResult) => void;
  onError?: (record: QueueRecord, error: Error) => void;
}

/**
 * What the SQS-triggered worker (and the local queue) runs for one record: a window to copy,
 * or a verification slice to check. A bad body gets InvalidMessageError.
 */
export async function handleWorkMessage(
  deps: BackfillDeps,
  body: string,
  receiveCount = 1,
): Promise<WorkResult> {
  const message = parseWorkMessage(body);
  if (message.type === 'copy-window') {
    return { type: 'copy-window', ...(await copyWindow(deps, message.windowId, { receiveCount })) };
  }
  return { type: 'verify-slice', sliceId: message.sliceId, ...(await verifySlice(deps, message.sliceId)) };
}

/** The worker as a batch handler with SQS partial batch responses (see partialBatchHandler). */
export function workerBatchHandler(deps: BackfillDeps, hooks: WorkerHooks = {}): BatchHandler {
  return partialBatchHandler((record) => handleWorkMessage(deps, record.body, record.receiveCount), hooks);
}
