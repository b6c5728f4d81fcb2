import { STORED_DIGEST, rowDigest } from '../../../lambdas/core/digest';
import { StorageSetupError } from '../../../lambdas/core/errors';
import { migrate, projectMigrationSets } from '../../../lambdas/core/migrator';
import {
  addCompressionPolicy,
  decideStorage,
  ensureMonthlyPartitions,
  setupTelemetryStorage,
  storageSql,
  timescaleAvailable,
} from '../../../lambdas/core/storage';
import { freshDatabases, type TestDatabases } from '../../support/pg';
import { testConfig } from '../../support/fixtures';
import { describeOnTimescale } from '../../support/servers';

/** A V2 with its schema, one tenant and one device, and no telemetry table yet. */
async function v2Schema(prefix: string, server: 'embedded' | 'timescaledb') {
  const made = await freshDatabases(prefix, server);
  for (const set of projectMigrationSets({ v2: 'public', control: 'migration_control' })) {
    await migrate(made.v2, 'migration_control', set);
  }
  await made.v2.query(
    `INSERT INTO tenants (id, name, slug, plan, status) VALUES ('t1', 'T', 't', 'P', 'ACTIVE');
     INSERT INTO device_templates (id, tenant_id, device_type, name) VALUES ('tp', 't1', 'x', 'x');
     INSERT INTO devices (id, tenant_id, template_id, name, updated_at) VALUES ('d1', 't1', 'tp', 'd', now());`,
  );
  return made;
}

let dbs: TestDatabases;

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
  beforeAll(async () => {
    dbs = await v2Schema('storage', 'embedded');
  });
  afterAll(() => dbs.drop());

  it('chooses TimescaleDB when the extension is reported available, partitioning otherwise, and obeys config', () => {
    expect(decideStorage('auto', true).kind).toBe('timescaledb');
    expect(decideStorage('auto', false).kind).toBe('partitioned');
    expect(decideStorage('partitioned', true).kind).toBe('partitioned');
    expect(decideStorage('timescaledb', true).kind).toBe('timescaledb');
    expect(() => decideStorage('timescaledb', false)).toThrow(StorageSetupError);
    expect(storageSql('timescaledb')).toMatch(/create_hypertable\('telemetry'/);
    // Compression is configured at setup; its policy is added only by cleanup.
    expect(storageSql('timescaledb')).toMatch(/timescaledb\.compress_segmentby = 'tenant_id, device_id'/);
    expect(storageSql('timescaledb')).not.toMatch(/add_compression_policy/);
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

describeOnTimescale('telemetry storage on a real TimescaleDB', () => {
  beforeAll(async () => {
    dbs = await v2Schema('storage_ts', 'timescaledb');
  });
  afterAll(() => dbs.drop());

  it('finds the extension available and, with storage auto, makes telemetry a hypertable with compression configured but no policy yet', async () => {
    expect(await timescaleAvailable(dbs.v2)).toBe(true);
    // The real probe, not a stub: `auto` chooses TimescaleDB because this server offers it.
    const result = await setupTelemetryStorage(dbs.v2, testConfig(dbs));
    expect(result).toMatchObject({
      kind: 'timescaledb',
      reason: 'timescaledb extension available',
      created: true,
    });
    expect((await dbs.v2.query('SELECT kind FROM migration_control.telemetry_storage')).rows).toEqual([
      { kind: 'timescaledb' },
    ]);
    const hypertable = await dbs.v2.query(
      `SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables`,
    );
    expect(hypertable.rows).toEqual([{ hypertable_name: 'telemetry', compression_enabled: true }]);
    const dimension = await dbs.v2.query(
      `SELECT column_name, time_interval::text AS every FROM timescaledb_information.dimensions WHERE hypertable_name = 'telemetry'`,
    );
    expect(dimension.rows).toEqual([{ column_name: 'timestamp', every: '7 days' }]);
    const settings = await dbs.v2.query(
      `SELECT attname, segmentby_column_index AS segment, orderby_column_index AS orderby, orderby_asc AS asc
         FROM timescaledb_information.compression_settings WHERE hypertable_name = 'telemetry' ORDER BY attname`,
    );
    expect(settings.rows).toEqual([
      { attname: 'device_id', segment: 2, orderby: null, asc: null },
      { attname: 'tenant_id', segment: 1, orderby: null, asc: null },
      { attname: 'timestamp', segment: null, orderby: 1, asc: false },
    ]);
    const policies = await dbs.v2.query(
      `SELECT 1 FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'`,
    );
    expect(policies.rows).toEqual([]);
    // The stored row digest, as on native partitions, under the current version.
    expect(
      (
        await dbs.v2.query(
          `SELECT col_description('telemetry'::regclass, attnum) AS c FROM pg_attribute WHERE attrelid = 'telemetry'::regclass AND attname = 'row_digest' AND attgenerated = 's'`,
        )
      ).rows,
    ).toEqual([{ c: STORED_DIGEST.version }]);
  });

  it('stores rows of any time in chunks, and a second setup changes nothing', async () => {
    await insert('1970-01-01T00:00:00Z', 1);
    await insert('2099-12-31T23:59:59.999Z', 2);
    await insert('2026-04-10T10:00:00Z', 3);
    const chunks = await dbs.v2.query(`SELECT count(*)::int AS n FROM show_chunks('telemetry')`);
    expect(chunks.rows[0].n).toBe(3);
    expect(await partitionOf(3)).toMatch(/^_timescaledb_internal\._hyper_\d+_\d+_chunk$/);
    const again = await setupTelemetryStorage(dbs.v2, testConfig(dbs));
    expect(again).toMatchObject({ kind: 'timescaledb', created: false });
    await expect(
      setupTelemetryStorage(dbs.v2, testConfig(dbs, { telemetryStorage: 'partitioned' })),
    ).rejects.toThrow(/already set up as timescaledb/);
  });

  it('adds the compression policy once, when asked (cleanup), and reports it there after', async () => {
    const added = await addCompressionPolicy(dbs.v2, testConfig(dbs));
    expect(added).toMatchObject({ policy: 'added', jobId: expect.any(Number) });
    const job = await dbs.v2.query(
      `SELECT config->>'compress_after' AS after FROM timescaledb_information.jobs
        WHERE proc_name = 'policy_compression' AND hypertable_name = 'telemetry'`,
    );
    expect(job.rows).toEqual([{ after: '90 days' }]);
    expect(await addCompressionPolicy(dbs.v2, testConfig(dbs))).toEqual({
      policy: 'already there',
      jobId: added.jobId,
    });
  });
});
