import { MetricUnit } from '@aws-lambda-powertools/metrics';
import type { Context } from 'aws-lambda';
import { sqsEventToRecords } from '../adapters/aws/sqs-queue';
import { workerBatchHandler } from '../core/worker';
import type { BatchResult } from '../ports/queue';
import { METRIC_NAMES, SERVICE_NAMES } from '../../lib/runtime-contract';
import { getRuntime } from './runtime';
import { invocation, lambdaTools, recordFailure } from './powertools';

const tools = lambdaTools(SERVICE_NAMES.worker);

/**
 * The backfill worker: SQS event → window copies (and verification slices) → partial batch
 * response (Powertools' batch processor). Only the records whose window failed are reported
 * back, so SQS redelivers just those (and after maxReceiveCount receives moves them to the DLQ).
 * An invalid event or an unreachable database fails the whole invocation, which returns every
 * record to the queue: nothing is dropped.
 */
export async function handler(event: unknown, context?: Context): Promise<BatchResult> {
  return invocation(tools, context, async () => {
    const records = sqsEventToRecords(event);
    const runtime = await getRuntime();
    const run = workerBatchHandler(runtime, {
      onDone: (record, result) => {
        if (result.type === 'copy-window') {
          tools.metrics.addMetric(METRIC_NAMES.windowsCopied, MetricUnit.Count, 1);
          tools.metrics.addMetric(METRIC_NAMES.rowsCopied, MetricUnit.Count, result.rowsCopied);
        }
        tools.logger.info('work done', { messageId: record.messageId, ...result });
      },
      onError: recordFailure(tools, METRIC_NAMES.windowFailed, 'window failed'),
    });
    return run(records);
  });
}
