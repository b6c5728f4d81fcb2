import { STORED_DIGEST, rowDigest } from '../../../lambdas/core/digest';
import { StorageSetupError } from '../../../lambdas/core/errors';
import { migrate, projectMigrationSets } from '../../../lambdas/core/migrator';
import {
  decideStorage,
  ensureMonthlyPartitions,
  setupTelemetryStorage,
  storageSql,
  timescaleAvailable,
} from '../../../lambdas/core/storage';
import { freshDatabases, type TestDatabases } from '../../support/pg';
import { testConfig } from '../../support/fixtures';

let dbs: TestDatabases;
beforeAll(async () => {
  dbs = await freshDatabases('storage');
  for (const set of projectMigrationSets({ v2: 'public', control: 'migration_control' })) {
    await migrate(dbs.v2, 'migration_control', set);
  }
  await dbs.v2.query(
    `INSERT INTO tenants (id, name, slug, plan, status) VALUES ('t1', 'T', 't', 'P', 'ACTIVE');
     INSERT INTO device_templates (id, tenant_id, device_type, name) VALUES ('tp', 't1', 'x', 'x');
     INSERT INTO devices (id, tenant_id, template_id, name, updated_at) VALUES ('d1', 't1', 'tp', 'd', now());`,
  );
});
afterAll(() => dbs.drop());

const insert = (ts: string, legacy: number) =>
  dbs.v2.query(
    `INSERT INTO telemetry (tenant_id, device_id, "timestamp", metrics, protocol, source, legacy_id)
     VALUES ('t1', 'd1', $1, '{}', 'MQTT', 'x', $2)`,
    [ts, legacy],
  );

const partitionOf = async (legacy: number) =>
  (await dbs.v2.query('SELECT tableoid::regclass::text AS p FROM telemetry WHERE legacy_id = $1', [legacy]))
    .rows[0].p;

describe('telemetry storage', () => {
  it('chooses TimescaleDB when the extension is reported available, partitioning otherwise, and obeys config', () => {
    expect(decideStorage('auto', true).kind).toBe('timescaledb');
    expect(decideStorage('auto', false).kind).toBe('partitioned');
    expect(decideStorage('partitioned', true).kind).toBe('partitioned');
    expect(decideStorage('timescaledb', true).kind).toBe('timescaledb');
    expect(() => decideStorage('timescaledb', false)).toThrow(StorageSetupError);
    expect(storageSql('timescaledb')).toMatch(/create_hypertable\('telemetry'/);
    expect(storageSql('timescaledb')).toMatch(/add_compression_policy\('telemetry'/);
  });

  it('reports what this server offers (no timescaledb in embedded PostgreSQL)', async () => {
    expect(await timescaleAvailable(dbs.v2)).toBe(false);
  });

  it('on a server reporting TimescaleDB, runs the hypertable setup (which fails here) and records nothing', async () => {
    const run = setupTelemetryStorage(dbs.v2, testConfig(dbs), { isTimescaleAvailable: async () => true });
    await expect(run).rejects.toThrow(StorageSetupError);
    await expect(run).rejects.toThrow(/timescaledb/);
    expect((await dbs.v2.query('SELECT * FROM migration_control.telemetry_storage')).rows).toEqual([]);
    expect((await dbs.v2.query("SELECT to_regclass('public.telemetry') AS t")).rows[0].t).toBeNull();
  });

  it('falls back to monthly partitions with a default partition, records it, and stores rows of any time', async () => {
    const result = await setupTelemetryStorage(dbs.v2, testConfig(dbs), {
      now: new Date('2026-03-15T00:00:00Z'),
    });
    expect(result).toMatchObject({ kind: 'partitioned', created: true });
    expect(result.partitionsCreated).toEqual([
      'telemetry_p202603',
      'telemetry_p202604',
      'telemetry_p202605',
      'telemetry_p202606',
    ]);
    expect((await dbs.v2.query('SELECT kind FROM migration_control.telemetry_storage')).rows).toEqual([
      { kind: 'partitioned' },
    ]);

    await insert('1970-01-01T00:00:00Z', 1);
    await insert('2099-12-31T23:59:59.999Z', 2);
    await insert('2026-04-10T10:00:00Z', 3);
    await insert('0001-01-01T00:00:00Z', 4);
    expect(await partitionOf(1)).toBe('telemetry_default');
    expect(await partitionOf(2)).toBe('telemetry_default');
    expect(await partitionOf(3)).toBe('telemetry_p202604');

    const again = await setupTelemetryStorage(dbs.v2, testConfig(dbs));
    expect(again).toMatchObject({ kind: 'partitioned', created: false, partitionsCreated: [] });
  });

  it('creates partitions on demand, moving rows already in the default partition', async () => {
    const digests = async () =>
      (
        await dbs.v2.query(
          `SELECT legacy_id, row_digest::text AS stored, (${rowDigest('telemetry', 'v2')})::text AS computed FROM telemetry ORDER BY legacy_id`,
        )
      ).rows;
    const before = await digests();
    const created = await ensureMonthlyPartitions(dbs.v2, 'public', [
      new Date('1970-01-20T00:00:00Z'),
      new Date('2099-12-01T00:00:00Z'),
      new Date('2026-04-02T00:00:00Z'),
    ]);
    expect(created).toEqual(['telemetry_p197001', 'telemetry_p209912']);
    expect(await partitionOf(1)).toBe('telemetry_p197001');
    expect(await partitionOf(2)).toBe('telemetry_p209912');
    expect(await partitionOf(4)).toBe('telemetry_default');
    expect((await dbs.v2.query('SELECT count(*)::int AS n FROM telemetry')).rows[0].n).toBe(4);
    // Moved rows keep their stored digest, which is still the one computed from the row.
    expect(await digests()).toEqual(before);
    expect(before.every((r) => r.stored !== null && r.stored === r.computed)).toBe(true);
    expect(
      (
        await dbs.v2.query(
          `SELECT col_description('telemetry'::regclass, attnum) AS c FROM pg_attribute WHERE attrelid = 'telemetry'::regclass AND attname = 'row_digest'`,
        )
      ).rows,
    ).toEqual([{ c: STORED_DIGEST.version }]);
    // Idempotent, and the new partitions take later rows of their month.
    expect(await ensureMonthlyPartitions(dbs.v2, 'public', [new Date('1970-01-01T00:00:00Z')])).toEqual([]);
    await insert('1970-01-31T23:00:00Z', 5);
    expect(await partitionOf(5)).toBe('telemetry_p197001');
  });

  it('refuses to switch a recorded choice', async () => {
    await expect(
      setupTelemetryStorage(dbs.v2, testConfig(dbs, { telemetryStorage: 'timescaledb' })),
    ).rejects.toThrow(/already set up as partitioned/);
  });
});
