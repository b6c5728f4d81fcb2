import { MetricUnit } from '@aws-lambda-powertools/metrics';
import type { Context } from 'aws-lambda';
import { repairBatchHandler, type RepairDeps } from '../core/sync/repair';
import { sqsEventToRecords } from '../adapters/aws/sqs-queue';
import type { BatchResult } from '../ports/queue';
import { METRIC_NAMES, SERVICE_NAMES } from '../../lib/runtime-contract';
import { getRuntime, type Runtime } from './runtime';
import { invocation, lambdaTools, recordFailure } from './powertools';

const tools = lambdaTools(SERVICE_NAMES.repairWorker);

// One deps object per runtime (container): the repair core caches its validated settings and
// V2 template ids per deps object.
const depsByRuntime = new WeakMap<Runtime, RepairDeps>();

/** What the repair core needs, from the container's runtime (pools, schemas, tenant). */
export function repairDeps(runtime: Runtime): RepairDeps {
  let deps = depsByRuntime.get(runtime);
  if (!deps) {
    deps = {
      v1: runtime.v1,
      v2: runtime.v2,
      schemas: { v1: runtime.config.schemas.v1, v2: runtime.config.schemas.v2 },
      tenantId: runtime.config.tenant.id,
    };
    depsByRuntime.set(runtime, deps);
  }
  return deps;
}

/**
 * The repair worker: SQS event of `repair-row` messages (sent by the backend's DualWriter when
 * its V2 write fails) → each named row re-synced from V1 to V2 → partial batch response
 * (Powertools' batch processor). Only the records whose repair failed are reported back, so SQS
 * redelivers just those (and after maxReceiveCount receives moves them to the repair DLQ). An
 * invalid event or an unreachable database fails the whole invocation, which returns every
 * record to the queue.
 */
export async function handler(event: unknown, context?: Context): Promise<BatchResult> {
  return invocation(tools, context, async () => {
    const records = sqsEventToRecords(event);
    const runtime = await getRuntime();
    const run = repairBatchHandler(repairDeps(runtime), {
      onRepaired: (record, result) => {
        tools.metrics.addMetric(METRIC_NAMES.rowsRepaired, MetricUnit.Count, 1);
        tools.logger.info('row repaired', { messageId: record.messageId, ...result });
      },
      onError: recordFailure(tools, METRIC_NAMES.repairFailed, 'repair failed'),
    });
    return run(records);
  });
}
