import type { BatchHandler, QueueRecord } from '../ports/queue';
import { handleCopyMessage, type BackfillDeps, type CopyResult } from './backfill';

export interface WorkerHooks {
  onDone?: (record: QueueRecord, result: CopyResult) => void;
  onError?: (record: QueueRecord, error: Error) => void;
}

/**
 * The backfill worker as a batch handler with SQS partial batch responses: each record is
 * handled on its own, and only the failed ones are reported back for redelivery, so a bad
 * message never disturbs the others of its batch.
 */
export function backfillBatchHandler(deps: BackfillDeps, hooks: WorkerHooks = {}): BatchHandler {
  return async (records) => {
    const batchItemFailures: { itemIdentifier: string }[] = [];
    for (const record of records) {
      try {
        // Not `onDone?.(record, await …)`: an absent hook would skip evaluating the copy itself.
        const result = await handleCopyMessage(deps, record.body, record.receiveCount);
        hooks.onDone?.(record, result);
      } catch (error) {
        batchItemFailures.push({ itemIdentifier: record.messageId });
        hooks.onError?.(record, error as Error);
      }
    }
    return { batchItemFailures };
  };
}
