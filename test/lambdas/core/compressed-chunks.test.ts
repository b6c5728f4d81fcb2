import '../../../lambdas/core/polyfills';
import { Pool } from 'pg';
import { runBackfillLocally } from '../../../lambdas/adapters/local/local-backfill';
import { runVerificationLocally } from '../../../lambdas/adapters/local/local-verify';
import { applyV1Schema } from '../../../lambdas/adapters/local/v1-generator';
import type { MigrationConfig } from '../../../lambdas/core/config';
import { APPLICATION_NAME } from '../../../lambdas/core/db';
import { repairRow } from '../../../lambdas/core/sync/repair';
import { compareKeys, type VerificationReport } from '../../../lambdas/core/verify';
import { DualWriter, type DualWriteFailure } from '../../../client';
import { dualWriteSwitch, recordingQueue } from '../../client/helpers';
import { testConfig } from '../../support/fixtures';
import { prepared } from '../../support/migration';
import { freshDatabases, type TestDatabases } from '../../support/pg';
import { describeOnTimescale } from '../../support/servers';

/**
 * Every statement of the migration that changes existing telemetry rows, run against chunks that
 * TimescaleDB has compressed, under a decompression limit that a predicate without the time
 * column exceeds (the first test proves it). The V2 sessions of the code under test have
 * TimescaleDB's bloom filters and post-decompression filtering off: without them (older
 * TimescaleDB releases, columns without a bloom index), a change is charged every row of every
 * batch its predicate cannot rule out. The data: 3 devices, one row an hour for 1,500 hours
 * (about 9 weekly chunks, one batch of at most 168 rows per device and chunk). A statement
 * naming the whole key decompresses one batch; a conflict check at one time, one batch per
 * device; a device's rows without a time, about 1,500.
 */
const LIMIT = 800;
const STRICT = [
  'timescaledb.enable_dml_bloom_filter=off',
  'timescaledb.enable_dml_decompression_tuple_filtering=off',
  `timescaledb.max_tuples_decompressed_per_dml_transaction=${LIMIT}`,
];

async function v1Data(dbs: TestDatabases) {
  await applyV1Schema(dbs.v1);
  await dbs.v1.query(`
    INSERT INTO users (id, email, "passwordHash", role, "updatedAt") VALUES ('u1', 'u1@example.com', 'h', 'ADMIN', now());
    INSERT INTO devices (id, name, type, "ownerId", "updatedAt")
      SELECT 'dev_' || d, 'Device ' || d, 'sensor', 'u1', now() FROM generate_series(1, 3) d;
    INSERT INTO device_data ("deviceId", "timestamp", data, protocol, source)
      SELECT 'dev_' || d, timestamp '2026-01-05 00:00' + h * interval '1 hour' + d * interval '1 second',
             jsonb_build_object('t', h, 'd', d), 'MQTT', CASE WHEN h % 7 = 0 THEN NULL ELSE 'edge' END
        FROM generate_series(1, 3) d, generate_series(0, 1499) h;
    INSERT INTO alerts (id, "deviceId", severity, message) SELECT 'a' || d, 'dev_' || d, 'LOW', 'x' FROM generate_series(1, 3) d;`);
}

/** Every difference of a report as `key kind [columns]`. */
const findings = (report: VerificationReport) =>
  report.mismatches
    .flatMap((m) =>
      m.differences.map(
        (d) => `${d.key} ${d.kind}${d.columns ? ` ${d.columns.map((c) => c.column).join(',')}` : ''}`,
      ),
    )
    .sort();

describeOnTimescale('telemetry in compressed chunks', () => {
  let dbs: TestDatabases;
  let config: MigrationConfig;
  /** V2 as the code under test sees it: the strict TimescaleDB settings above. */
  let strict: Pool;
  let deps: { v1: Pool; v2: Pool; config: MigrationConfig };

  beforeAll(async () => {
    dbs = await freshDatabases('compressed', 'timescaledb');
    await v1Data(dbs);
    config = testConfig(dbs, {
      batch: { telemetryWindowRows: 1000, entityWindowRows: 10, concurrency: 2, maxReceiveCount: 3 },
    });
    await prepared(dbs, config);
    await runBackfillLocally({ v1: dbs.v1, v2: dbs.v2, config });
    const compressed = await dbs.v2.query(
      `SELECT count(compress_chunk(c))::int AS n FROM show_chunks('telemetry') c`,
    );
    expect(compressed.rows[0].n).toBeGreaterThanOrEqual(9);
    strict = new Pool({
      connectionString: dbs.v2Url,
      max: 4,
      application_name: APPLICATION_NAME,
      options: STRICT.map((s) => `-c ${s}`).join(' '),
    });
    strict.on('error', () => undefined);
    deps = { v1: dbs.v1, v2: strict, config };
  });
  afterAll(async () => {
    await strict.end();
    await dbs.drop();
  });

  /** The V2 key of a V1 telemetry row. */
  const v2Key = async (legacyId: string) =>
    (
      await dbs.v2.query(`SELECT tenant_id, device_id, "timestamp" FROM telemetry WHERE legacy_id = $1`, [
        legacyId,
      ])
    ).rows[0];
  const v1Id = async (device: string, offset: number) =>
    String(
      (
        await dbs.v1.query(
          `SELECT id FROM device_data WHERE "deviceId" = $1 ORDER BY "timestamp" OFFSET $2 LIMIT 1`,
          [device, offset],
        )
      ).rows[0].id,
    );
  /**
   * V2 holds exactly the V1 row of a device_data id, as the verifier compares them (each
   * column's hash in SQL on both sides), or nothing when V1 has none.
   */
  const expectInSync = async (id: string) => {
    const count = async (pool: Pool, sql: string) => (await pool.query<{ n: number }>(sql, [id])).rows[0].n;
    const inV1 = await count(dbs.v1, 'SELECT count(*)::int AS n FROM device_data WHERE id = $1');
    const inV2 = await count(dbs.v2, 'SELECT count(*)::int AS n FROM telemetry WHERE legacy_id = $1');
    expect({ id, rows: inV2 }).toEqual({ id, rows: inV1 });
    const differences = await compareKeys({ v1: dbs.v1, v2: dbs.v2, config }, 'telemetry', [id]);
    expect({ id, differences }).toEqual({ id, differences: [] });
  };

  /** Compresses every chunk again, also those that earlier changes left partly uncompressed. */
  const recompress = async () => {
    await dbs.v2.query(
      `SELECT count(compress_chunk(c, if_not_compressed => true)) FROM show_chunks('telemetry') c`,
    );
    const partial = await dbs.v2.query(
      `SELECT count(*)::int AS n FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
        WHERE h.table_name = 'telemetry' AND c.status <> 1`,
    );
    expect(partial.rows[0].n).toBe(0);
  };

  /** Runs a statement on the strict V2 in a transaction that is rolled back. */
  const tryOnStrict = async (sql: string, params: unknown[]) => {
    const client = await strict.connect();
    try {
      await client.query('BEGIN');
      return await client.query(sql, params);
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
  };

  it('has settings under which a predicate without the time column exceeds the limit, and the whole key does not', async () => {
    const id = await v1Id('dev_1', 700);
    const key = await v2Key(id);
    await expect(
      tryOnStrict(`DELETE FROM telemetry WHERE legacy_id = $1 AND tenant_id = $2 AND device_id = $3`, [
        id,
        key.tenant_id,
        key.device_id,
      ]),
    ).rejects.toThrow(/tuple decompression limit exceeded/);
    const deleted = await tryOnStrict(
      `DELETE FROM telemetry WHERE legacy_id = $1 AND tenant_id = $2 AND device_id = $3 AND "timestamp" = $4`,
      [id, key.tenant_id, key.device_id, key.timestamp],
    );
    expect(deleted.rowCount).toBe(1);
  });

  it('dual writes update, move in time and delete rows of compressed chunks, with no repair needed', async () => {
    await recompress();
    const queue = recordingQueue();
    const failures: DualWriteFailure[] = [];
    const writer = new DualWriter({
      v1: dbs.v1,
      v2: strict,
      router: dualWriteSwitch(true),
      repairQueue: queue,
      tenantId: config.tenant.id,
      onV2Failure: (f) => void failures.push(f),
    });
    const [changed, moved, deleted] = [
      await v1Id('dev_1', 100),
      await v1Id('dev_2', 200),
      await v1Id('dev_1', 900),
    ];
    await writer.update('telemetry', changed, { data: { changed: true }, source: 'fixed' });
    // To another week: the V2 row leaves its chunk for another one.
    await writer.update('telemetry', moved, { timestamp: new Date('2026-02-20T10:30:00.123Z') });
    await writer.delete('telemetry', deleted);
    const added = await writer.insert('telemetry', {
      deviceId: 'dev_3',
      timestamp: new Date('2026-01-20T03:00:00.5Z'),
      data: { late: true },
      protocol: 'MQTT',
    });
    expect(failures.map((f) => f.error.message)).toEqual([]);
    expect(queue.bodies).toEqual([]);
    for (const id of [changed, moved, deleted, added.id]) await expectInSync(id);
  });

  it('the repair worker re-syncs rows of compressed chunks changed or deleted on V1 alone', async () => {
    await recompress();
    const [changed, moved, deleted] = [
      await v1Id('dev_2', 50),
      await v1Id('dev_3', 60),
      await v1Id('dev_3', 1200),
    ];
    await dbs.v1.query(`UPDATE device_data SET data = '{"behind": "the writer"}' WHERE id = $1`, [changed]);
    await dbs.v1.query(
      `UPDATE device_data SET "timestamp" = "timestamp" + interval '20 days' WHERE id = $1`,
      [moved],
    );
    await dbs.v1.query(`DELETE FROM device_data WHERE id = $1`, [deleted]);
    const repairDeps = { v1: dbs.v1, v2: strict, tenantId: config.tenant.id };
    expect((await repairRow(repairDeps, 'telemetry', changed)).action).toBe('upserted');
    expect((await repairRow(repairDeps, 'telemetry', moved)).action).toBe('upserted');
    expect((await repairRow(repairDeps, 'telemetry', deleted)).action).toBe('deleted');
    for (const id of [changed, moved, deleted]) await expectInSync(id);
  });

  it('window repair rewrites only the rows of a compressed window that differ, and verification explains them', async () => {
    const [changed, gone, twin, orphan] = [
      await v1Id('dev_1', 300),
      await v1Id('dev_2', 301),
      await v1Id('dev_3', 302),
      await v1Id('dev_1', 305),
    ];
    // V1 lost a row the backfill had copied (a delete whose dual write went missing).
    await dbs.v1.query('DELETE FROM device_data WHERE id = $1', [orphan]);
    // V2 edited behind the migration's back (whole keys, on an unrestricted session).
    const c = await v2Key(changed);
    await dbs.v2.query(
      `UPDATE telemetry SET quality = 'BAD' WHERE legacy_id = $1 AND device_id = $2 AND "timestamp" = $3`,
      [changed, c.device_id, c.timestamp],
    );
    const g = await v2Key(gone);
    await dbs.v2.query(`DELETE FROM telemetry WHERE legacy_id = $1 AND device_id = $2 AND "timestamp" = $3`, [
      gone,
      g.device_id,
      g.timestamp,
    ]);
    await dbs.v2.query(
      `INSERT INTO telemetry (tenant_id, device_id, "timestamp", metrics, protocol, source, quality, legacy_id)
       SELECT tenant_id, device_id, "timestamp" + interval '1 millisecond', metrics, protocol, source, quality, 999999
         FROM telemetry WHERE legacy_id = $1`,
      [twin],
    );
    // Every row the repair has to change sits in a compressed batch.
    await recompress();
    const report = await runVerificationLocally(deps, { repair: false, tables: ['telemetry'] });
    expect(findings(report)).toEqual(
      [`${changed} changed quality`, `${gone} missing`, `${orphan} extra`, '999999 extra'].sort(),
    );

    const repaired = await runVerificationLocally(deps, { tables: ['telemetry'] });
    expect(repaired.repaired.length).toBeGreaterThan(0);
    expect(repaired.repaired.map((r) => r.error ?? 'ok')).toEqual(repaired.repaired.map(() => 'ok'));
    expect(repaired.clean).toBe(true);
    for (const id of [changed, gone, orphan]) await expectInSync(id);
    expect(
      (await dbs.v2.query(`SELECT count(*)::int AS n FROM telemetry WHERE legacy_id = 999999`)).rows[0].n,
    ).toBe(0);
  });

  it('a device delete cascades to its telemetry in compressed chunks', async () => {
    await recompress();
    const failures: DualWriteFailure[] = [];
    const writer = new DualWriter({
      v1: dbs.v1,
      v2: strict,
      router: dualWriteSwitch(true),
      repairQueue: recordingQueue(),
      tenantId: config.tenant.id,
      onV2Failure: (f) => void failures.push(f),
    });
    expect(
      (await dbs.v2.query(`SELECT count(*)::int AS n FROM telemetry WHERE device_id = 'dev_3'`)).rows[0].n,
    ).toBeGreaterThan(1000);
    await writer.delete('devices', 'dev_3');
    expect(failures.map((f) => f.error.message)).toEqual([]);
    expect(
      (await dbs.v2.query(`SELECT count(*)::int AS n FROM telemetry WHERE device_id = 'dev_3'`)).rows[0].n,
    ).toBe(0);
    // Everything still equals V1, and the history is still compressed.
    const report = await runVerificationLocally(deps, { repair: false, sampleSize: 100 });
    expect(findings(report)).toEqual([]);
    expect(report.clean).toBe(true);
    const chunks = await dbs.v2.query(
      `SELECT count(*)::int AS n FROM timescaledb_information.chunks WHERE hypertable_name = 'telemetry' AND is_compressed`,
    );
    expect(chunks.rows[0].n).toBeGreaterThanOrEqual(9);
  });
});
