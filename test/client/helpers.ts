import { DualWriter, type DualWriteFailure, type DualWriterOptions } from '../../client';
import { runBackfillLocally } from '../../lambdas/adapters/local/local-backfill';
import type { MigrationConfig } from '../../lambdas/core/config';
import type { MappedTable } from '../../lambdas/core/mapping';
import type { WritePrimary } from '../../lambdas/ports/parameters';
import type { QueuePort } from '../../lambdas/ports/queue';
import { seedV1, testConfig } from '../support/fixtures';
import { prepared } from '../support/migration';
import { freshDatabases, type TestDatabases } from '../support/pg';
import { PARTITIONS, type StorageCase } from '../support/servers';

export const TABLES: MappedTable[] = ['users', 'devices', 'telemetry', 'alerts'];

/** A queue port that keeps what it was sent; `fail` makes it reject like a failed SendMessageBatch. */
export function recordingQueue(): QueuePort & { bodies: string[]; fail: boolean } {
  const queue = {
    bodies: [] as string[],
    fail: false,
    async sendAll(bodies: readonly string[]) {
      if (queue.fail) throw new Error('SQS is unreachable (test)');
      queue.bodies.push(...bodies);
      return { sent: bodies.length, calls: 1 };
    },
  };
  return queue;
}

/** A router stand-in whose switches a test flips: dual-write `on`, and which side is the write primary. */
export function dualWriteSwitch(on = true, primary: WritePrimary = 'v1') {
  return {
    on,
    primary,
    dualWriteEnabled() {
      return this.on;
    },
    writePrimary() {
      return this.primary;
    },
  };
}

export function recorder() {
  const metrics: [string, number][] = [];
  const count = (name: string) => metrics.filter(([n]) => n === name).reduce((a, [, v]) => a + v, 0);
  return { metrics, count, onMetric: (name: string, value: number) => void metrics.push([name, value]) };
}

/** A suite's DualWriter and what it records (see dualWriterSuite). */
export interface DualWriterSuite<R extends DualWriterOptions['router'] = DualWriterOptions['router']> {
  dbs: TestDatabases;
  config: MigrationConfig;
  router: R;
  queue: ReturnType<typeof recordingQueue>;
  rec: ReturnType<typeof recorder>;
  /** Every failed mirror half, V2's and V1's. */
  failures: DualWriteFailure[];
  writer: DualWriter;
}

/**
 * A DualWriter on fresh databases for one suite: V1 seeded with `seed`, Phase 1 done (and the
 * backfill too, with `backfilled`), the writer asking `router`, its repair messages, metrics and
 * failed mirror halves recorded.
 */
export async function dualWriterSuite<R extends DualWriterOptions['router']>(
  prefix: string,
  options: {
    router: R;
    seed: { devices: number; telemetry: number; seed: number };
    backfilled?: boolean;
    storage?: StorageCase;
    legacyIdBlockSize?: number;
  },
): Promise<DualWriterSuite<R>> {
  const dbs = await freshDatabases(prefix, (options.storage ?? PARTITIONS).server);
  await seedV1(dbs.v1, options.seed);
  const config = testConfig(dbs, {
    batch: { telemetryWindowRows: 100, entityWindowRows: 4, concurrency: 2, maxReceiveCount: 3 },
  });
  await prepared(dbs, config);
  if (options.backfilled) await runBackfillLocally({ v1: dbs.v1, v2: dbs.v2, config });
  const queue = recordingQueue();
  const rec = recorder();
  const failures: DualWriteFailure[] = [];
  const writer = new DualWriter({
    v1: dbs.v1,
    v2: dbs.v2,
    router: options.router,
    repairQueue: queue,
    tenantId: config.tenant.id,
    legacyIdBlockSize: options.legacyIdBlockSize,
    onMetric: rec.onMetric,
    onV2Failure: (f) => void failures.push(f),
    onV1Failure: (f) => void failures.push(f),
  });
  return { dbs, config, router: options.router, queue, rec, failures, writer };
}

export { expectAllInSync, expectRowInSync, v2RowsOf } from '../support/in-sync';
