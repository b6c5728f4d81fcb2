import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import { sqsEventToRecords } from '../adapters/aws/sqs-queue';
import { workerBatchHandler } from '../core/worker';
import type { BatchResult } from '../ports/queue';
import { METRIC_NAMES, METRICS_NAMESPACE, SERVICE_NAMES } from '../../lib/runtime-contract';
import { getRuntime } from './runtime';
import { recordFailure, runBatch } from './sqs-batch';

const logger = new Logger({ serviceName: SERVICE_NAMES.worker });
const metrics = new Metrics({ namespace: METRICS_NAMESPACE, serviceName: SERVICE_NAMES.worker });

/**
 * The backfill worker: SQS event → window copies (and verification slices) → partial batch response. Only the records
 * whose window failed are reported back, so SQS redelivers just those (and after
 * maxReceiveCount receives moves them to the DLQ). An invalid event or an unreachable database
 * fails the whole invocation, which returns every record to the queue: nothing is dropped.
 */
export async function handler(event: unknown): Promise<BatchResult> {
  const records = sqsEventToRecords(event);
  const runtime = await getRuntime();
  const run = workerBatchHandler(runtime, {
    onDone: (record, result) => {
      if (result.type === 'copy-window') {
        metrics.addMetric(METRIC_NAMES.windowsCopied, MetricUnit.Count, 1);
        metrics.addMetric(METRIC_NAMES.rowsCopied, MetricUnit.Count, result.rowsCopied);
      }
      logger.info('work done', { messageId: record.messageId, ...result });
    },
    onError: recordFailure(logger, metrics, METRIC_NAMES.windowFailed, 'window failed'),
  });
  return runBatch(metrics, run, records);
}
