import { DualWriter, type DualWriteFailure, type DualWriterOptions } from '../../client';
import { runBackfillLocally } from '../../lambdas/adapters/local/local-backfill';
import type { MigrationConfig } from '../../lambdas/core/config';
import type { MappedTable } from '../../lambdas/core/mapping';
import type { WritePrimary } from '../../lambdas/ports/parameters';
import type { QueuePort } from '../../lambdas/ports/queue';
import { seedV1, testConfig } from '../support/fixtures';
import { prepared } from '../support/migration';
import { freshDatabases, suiteSetup, type TestDatabases } from '../support/pg';
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

/**
 * A describe body's DualWriter suite, made once before its tests and dropped after them (see
 * suiteSetup). After each test no write may have failed, and with `quietQueue` none may have
 * been queued for repair either.
 */
export function useDualWriterSuite<S extends DualWriterSuite>(
  make: () => Promise<S>,
  options: { quietQueue?: boolean } = {},
): S {
  const suite = suiteSetup(make);
  afterEach(() => {
    expect(suite.failures.map((f) => f.error.message)).toEqual([]);
    if (options.quietQueue) expect(suite.queue.bodies).toEqual([]);
  });
  return suite;
}

/** The fewest columns a V1 user row needs (email `<id>@example.com`). */
export const minimalUser = (id: string, updatedAt: Date) => ({
  id,
  email: `${id}@example.com`,
  passwordHash: 'h',
  updatedAt,
});

/** Runs `work` with the suite's dual write off, and turns it on again however `work` ends. */
export async function whileDualWriteOff(
  suite: { router: { on: boolean } },
  work: () => Promise<void>,
): Promise<void> {
  suite.router.on = false;
  try {
    await work();
  } finally {
    suite.router.on = true;
  }
}

export { expectAllInSync, expectRowInSync, v2RowsOf } from '../support/in-sync';
