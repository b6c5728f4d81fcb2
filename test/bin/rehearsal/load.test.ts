import { backendSettings, SyntheticBackend } from '../../../bin/rehearsal/load';
import { LocalQueue } from '../../../lambdas/adapters/local/local-queue';
import { MemoryParameters } from '../../../lambdas/adapters/local/memory-parameters';
import type { MigrationConfig } from '../../../lambdas/core/config';
import { parameterNames } from '../../../lambdas/ports/parameters';
import { expectAllInSync } from '../../support/in-sync';
import { preparedDatabases } from '../../support/migration';
import type { TestDatabases } from '../../support/pg';

/** Every write of the synthetic backend's mix, by the name its stats give it. */
const WRITE_KINDS = [
  '$transaction',
  'alert.create',
  'alert.deleteMany',
  'alert.updateMany',
  'device.update',
  'device.update (nested create)',
  'deviceData.create',
  'deviceData.createMany',
];

describe("the rehearsal's synthetic backend (Prisma through withMigration, reads through the TrafficRouter)", () => {
  let dbs: TestDatabases;
  let config: MigrationConfig;

  beforeAll(async () => {
    ({ dbs, config } = await preparedDatabases(
      'load',
      { devices: 12, telemetry: 600, seed: 21 },
      { backfilled: true },
    ));
  });
  afterAll(() => dbs.drop());

  const backend = (parameters: MemoryParameters) =>
    new SyntheticBackend(dbs.v1, dbs.v2, parameters, {
      perSecond: 100,
      ...backendSettings(config),
      repairs: new LocalQueue({ visibilityTimeoutMs: 30_000, maxReceiveCount: 5, concurrency: 1 }),
    });

  it('runs every write of its mix with dual-write on, and V2 ends equal to V1', async () => {
    const names = parameterNames(config.ssmPrefix);
    const load = backend(new MemoryParameters({ [names.dualWrite]: 'on', [names.trafficPercentage]: '100' }));
    // Two rounds of the mix: every write kind twice, two reads per write.
    await load.runOperations(72);
    const stats = await load.stop();
    expect(stats).toMatchObject({ operations: 72, writes: 24, reads: 48, errors: 0, firstErrors: [] });
    expect(Object.keys(stats.writesByOperation).sort()).toEqual(WRITE_KINDS);
    // At 100 % every read went to V2.
    expect(stats.readsFromV2).toBe(48);
    const written = await dbs.v1.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM alerts WHERE id LIKE 'rehearsal_%'",
    );
    expect(written.rows[0].n).toBeGreaterThan(0);
    await expectAllInSync(dbs, config);
  });

  it('with the writes switched to V2, writes V2 first through $migration.writer, and V1 ends equal to V2', async () => {
    const names = parameterNames(config.ssmPrefix);
    const load = backend(
      new MemoryParameters({
        [names.dualWrite]: 'on',
        [names.trafficPercentage]: '100',
        [names.writePrimary]: 'v2',
      }),
    );
    // Four rounds of the V2-first mix (one write in three operations, four write kinds).
    await load.runOperations(48);
    const stats = await load.stop();
    expect(stats).toMatchObject({ writes: 16, writesV2First: 16, errors: 0, rowsMissingInV1: 0 });
    expect(Object.keys(stats.writesByOperation).sort()).toEqual([
      'writer.alerts.insert',
      'writer.alerts.update',
      'writer.devices.update',
      'writer.telemetry.insert',
    ]);
    expect(stats.rowsInsertedV2First).toBeGreaterThan(0);
    await expectAllInSync(dbs, config);
  });

  // Last: V1 gets rows V2 does not.
  it("with dual-write off and traffic 0, its writes reach V1 only and its reads stay on V1 (a second backend's new ids never collide with the first's)", async () => {
    const names = parameterNames(config.ssmPrefix);
    const load = backend(new MemoryParameters({ [names.dualWrite]: 'off', [names.trafficPercentage]: '0' }));
    const before = await dbs.v2.query<{ n: number }>('SELECT count(*)::int AS n FROM telemetry');
    const stats = await load.runOperations(36);
    await load.stop();
    expect(stats).toMatchObject({ errors: 0, readsFromV2: 0 });
    const after = await dbs.v2.query<{ n: number }>('SELECT count(*)::int AS n FROM telemetry');
    expect(after.rows[0].n).toBe(before.rows[0].n);
    const v1 = await dbs.v1.query<{ n: number }>('SELECT count(*)::int AS n FROM device_data');
    expect(v1.rows[0].n).toBeGreaterThan(after.rows[0].n);
  });
});
