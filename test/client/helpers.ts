import type { Pool } from 'pg';
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

/** A pool whose first query carrying `held` among its values (or inside one) waits until released. */
export function holdingPool(pool: Pool, held: string) {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let holding!: () => void;
  const isHolding = new Promise<void>((resolve) => (holding = resolve));
  const wrapped = {
    async query(config: unknown, values?: unknown[]) {
      if (Array.isArray(values) && values.some((v) => typeof v === 'string' && v.includes(held))) {
        holding();
        await released;
      }
      return pool.query(config as string, values);
    },
    on: () => wrapped,
  } as unknown as Pool;
  return { pool: wrapped, isHolding, release };
}

/**
 * Two writes of one row racing, the earlier one's mirror half landing last: `early` writes through
 * a second writer whose mirror half (to `mirror`: V2 while V1 is the write primary, V1 once V2
 * is) stalls at its first query carrying `held`; meanwhile `late` writes through the suite's own
 * writer; then the stalled half goes on. Its failures are recorded with the suite's.
 */
export async function raceToMirror(
  suite: DualWriterSuite,
  mirror: WritePrimary,
  held: string,
  early: (writer: DualWriter) => Promise<unknown>,
  late: (writer: DualWriter) => Promise<unknown>,
): Promise<void> {
  const slow = holdingPool(suite.dbs[mirror], held);
  const writer = new DualWriter({
    v1: mirror === 'v1' ? slow.pool : suite.dbs.v1,
    v2: mirror === 'v2' ? slow.pool : suite.dbs.v2,
    router: dualWriteSwitch(true, mirror === 'v2' ? 'v1' : 'v2'),
    repairQueue: suite.queue,
    tenantId: suite.config.tenant.id,
    onV2Failure: (f) => void suite.failures.push(f),
    onV1Failure: (f) => void suite.failures.push(f),
  });
  const first = early(writer);
  // An early write that ends without reaching the held query fails here instead of waiting forever.
  await Promise.race([
    slow.isHolding,
    first.then(() => {
      throw new Error(`the early write ended without a query carrying "${held}"`);
    }),
  ]);
  await late(suite.writer);
  slow.release();
  await first;
}

export { expectAllInSync, expectRowInSync, v2RowsOf } from '../support/in-sync';
