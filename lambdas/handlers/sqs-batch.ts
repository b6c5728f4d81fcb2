import type { Logger } from '@aws-lambda-powertools/logger';
import { MetricUnit, type Metrics } from '@aws-lambda-powertools/metrics';
import { safeError, safeThrowable } from '../core/safe-error';
import type { BatchHandler, BatchResult, QueueRecord } from '../ports/queue';

/**
 * The `onError` hook of a queue worker's batch handler: counts the failed delivery in
 * `metricName` and logs `message` with the record's id, its receive count and the error (its
 * name, message and SQLSTATE only: see safe-error.ts). The
 * batch handler reports the record back, so SQS redelivers it (or moves it to the DLQ).
 */
export function recordFailure(
  logger: Logger,
  metrics: Metrics,
  metricName: string,
  message: string,
): (record: QueueRecord, error: Error) => void {
  return (record, error) => {
    metrics.addMetric(metricName, MetricUnit.Count, 1);
    logger.error(message, {
      messageId: record.messageId,
      receiveCount: record.receiveCount,
      error: safeError(error),
    });
  };
}

/**
 * Runs the batch and publishes the metrics its hooks stored, also when the batch throws (the
 * error still fails the invocation, so every record returns to the queue).
 */
export async function runBatch(
  metrics: Metrics,
  run: BatchHandler,
  records: QueueRecord[],
): Promise<BatchResult> {
  try {
    return await run(records);
  } catch (error) {
    // The runtime reports a thrown error's message and stack: only the safe ones leave.
    throw safeThrowable(error);
  } finally {
    metrics.publishStoredMetrics();
  }
}
