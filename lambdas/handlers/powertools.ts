import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import { Tracer } from '@aws-lambda-powertools/tracer';
import type { Context } from 'aws-lambda';
import { safeError, safeThrowable } from '../core/safe-error';
import type { QueueRecord } from '../ports/queue';
import { METRICS_NAMESPACE } from '../../lib/runtime-contract';

/** A Lambda's Powertools: structured logs, metrics (EMF) and X-Ray traces, one service name. */
export interface LambdaTools {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly tracer: Tracer;
}

/** The Powertools of one Lambda; every metric is in METRICS_NAMESPACE with a `service` dimension. */
export function lambdaTools(serviceName: string): LambdaTools {
  return {
    logger: new Logger({ serviceName }),
    metrics: new Metrics({ namespace: METRICS_NAMESPACE, serviceName }),
    tracer: new Tracer({ serviceName }),
  };
}

/**
 * Runs one invocation: the Lambda context (request id, function, cold start) on every log line
 * it writes, a `## handler` X-Ray subsegment annotated with the cold start and the service (and
 * the error, when it fails), and the metrics stored during it published at its end, also when
 * it fails (the error still fails the invocation: an SQS batch returns to the queue whole).
 * A failure leaves with its name, message and SQLSTATE only (safe-error.ts): the runtime's
 * report, the trace and Step Functions' cause carry no row.
 */
export async function invocation<R>(
  tools: LambdaTools,
  context: Context | undefined,
  work: () => Promise<R>,
): Promise<R> {
  const { logger, metrics, tracer } = tools;
  if (context) logger.addContext(context);
  const parent = tracer.isTracingEnabled() ? tracer.getSegment() : undefined;
  const segment = parent?.addNewSubsegment('## handler');
  if (segment) tracer.setSegment(segment);
  tracer.annotateColdStart();
  tracer.addServiceNameAnnotation();
  try {
    return await work();
  } catch (error) {
    const safe = safeThrowable(error);
    tracer.addErrorAsMetadata(safe);
    throw safe;
  } finally {
    segment?.close();
    if (parent) tracer.setSegment(parent);
    metrics.publishStoredMetrics();
  }
}

/**
 * The `onError` hook of a queue worker's batch handler: counts the failed delivery in
 * `metricName` and logs `message` with the record's id, its receive count and the error (its
 * name, message and SQLSTATE only: see safe-error.ts). The batch handler reports the record
 * back, so SQS redelivers it (or moves it to the DLQ).
 */
export function recordFailure(
  { logger, metrics }: LambdaTools,
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
