import type { Pool } from 'pg';
import { runBackfillLocally } from '../../../lambdas/adapters/local/local-backfill';
import { runVerificationLocally } from '../../../lambdas/adapters/local/local-verify';
import { STORED_DIGEST, rowDigest } from '../../../lambdas/core/digest';
import { freshDatabases } from '../../support/pg';
import { rowCounts, seedV1, testConfig } from '../../support/fixtures';
import { prepared } from '../../support/migration';

const batch = { telemetryWindowRows: 500, entityWindowRows: 50, concurrency: 2, maxReceiveCount: 3 };

async function migrated() {
  const dbs = await freshDatabases('digest');
  await seedV1(dbs.v1, { devices: 12, telemetry: 3000, seed: 5 });
  const config = testConfig(dbs, { batch });
  await prepared(dbs, config);
  const deps = { v1: dbs.v1, v2: dbs.v2, config };
  await runBackfillLocally(deps);
  return { dbs, config, deps };
}

/** Runs `sql` on one connection of `pool` after `setup`, returning its rows' `k` → `d`. */
async function digests(pool: Pool, setup: string[], sql: string): Promise<Map<string, string>> {
  const client = await pool.connect();
  try {
    for (const s of setup) await client.query(s);
    const { rows } = await client.query<{ k: string; d: string }>(sql);
    return new Map(rows.map((r) => [r.k, r.d]));
  } finally {
    client.release();
  }
}

describe('the row digest stored with V2 telemetry', () => {
  let ctx: Awaited<ReturnType<typeof migrated>>;
  beforeAll(async () => {
    ctx = await migrated();
  });
  afterAll(() => ctx.dbs.drop());

  const v1Digests = () =>
    digests(
      ctx.dbs.v1,
      [
        `SET TimeZone = 'Asia/Kolkata'`,
        `SELECT set_config('migration.tenant_id', 'default_tenant_id', false)`,
      ],
      `SELECT id::text AS k, (${rowDigest('telemetry', 'v1')})::text AS d FROM device_data`,
    );
  const v2Stored = () =>
    digests(
      ctx.dbs.v2,
      [],
      `SELECT legacy_id::text AS k, ${STORED_DIGEST.column}::text AS d FROM telemetry WHERE legacy_id IS NOT NULL`,
    );

  it('is, on every row, the digest of the same row on V1 and the one computed from V2, in any time zone', async () => {
    // Rows at the ends of time too (no partition but the default takes them).
    const device = (await ctx.dbs.v1.query('SELECT id FROM devices ORDER BY id LIMIT 1')).rows[0].id;
    for (const [id, ts] of [
      [900001, 'infinity'],
      [900002, '-infinity'],
      [900003, '1969-12-31 23:59:59.999'],
    ] as const) {
      await ctx.dbs.v1.query(
        `INSERT INTO device_data (id, "deviceId", "timestamp", data, protocol, source) VALUES ($1, $2, $3, '{"b": [1.50, "ü"], "a": null}', 'mqtt', NULL)`,
        [id, device, ts],
      );
      await ctx.dbs.v2.query(
        `INSERT INTO telemetry (tenant_id, device_id, "timestamp", metrics, protocol, source, quality, legacy_id)
         VALUES ('default_tenant_id', $2, ($3::timestamp AT TIME ZONE 'UTC'), '{"a": null, "b": [1.5, "ü"]}', 'mqtt', 'migrated', 'GOOD', $1)`,
        [id, device, ts],
      );
    }
    const v1 = await v1Digests();
    const stored = await v2Stored();
    const computed = await digests(
      ctx.dbs.v2,
      [`SET TimeZone = 'America/New_York'`],
      `SELECT legacy_id::text AS k, (${rowDigest('telemetry', 'v2')})::text AS d FROM telemetry WHERE legacy_id IS NOT NULL`,
    );
    expect(stored.size).toBe(3003);
    expect(new Set(stored.values()).size).toBe(3003);
    expect(stored).toEqual(v1);
    expect(computed).toEqual(v1);
    await ctx.dbs.v1.query('DELETE FROM device_data WHERE id > 900000');
    await ctx.dbs.v2.query('DELETE FROM telemetry WHERE legacy_id > 900000');
  });

  it('leaves report totals counting every row once, whether a slice holds one window or many', async () => {
    const report = await runVerificationLocally(ctx.deps, { repair: false, sampleSize: 0 });
    expect(report.clean).toBe(true);
    // With 50-row entity windows the devices fit in one window: a one-window slice.
    const single = await ctx.dbs.v2.query(
      `SELECT DISTINCT table_name FROM migration_control.verification_slices WHERE run_id = $1 AND cardinality(window_ids) = 1`,
      [report.runId],
    );
    expect(single.rows.map((r) => r.table_name)).toContain('devices');
    const v1 = await rowCounts(ctx.dbs.v1, 'public');
    const counted = Object.fromEntries(
      Object.entries(report.tables).map(([table, t]) => [table, [t.v1Rows, t.v2Rows]]),
    );
    expect(counted).toEqual({
      users: [v1.users, v1.users],
      devices: [v1.devices, v1.devices],
      telemetry: [v1.device_data, v1.device_data],
      alerts: [v1.alerts, v1.alerts],
    });
  });

  it('follows every update of a V2 row', async () => {
    const before = await v2Stored();
    await ctx.dbs.v2.query(`UPDATE telemetry SET metrics = metrics || '{"x": 1}' WHERE legacy_id = 17`);
    const after = await v2Stored();
    expect(after.get('17')).not.toEqual(before.get('17'));
    after.delete('17');
    before.delete('17');
    expect(after).toEqual(before);
    await ctx.dbs.v2.query(`UPDATE telemetry SET metrics = metrics - 'x' WHERE legacy_id = 17`);
    expect((await v2Stored()).get('17')).toEqual((await v1Digests()).get('17'));
  });

  it('is summed only when its comment names the current digest, else the rows are hashed', async () => {
    const verify = async () => {
      const report = await runVerificationLocally(ctx.deps, {
        repair: false,
        sampleSize: 0,
        tables: ['telemetry'],
      });
      return { clean: report.clean, windows: report.tables.telemetry.mismatched };
    };
    expect(await verify()).toEqual({ clean: true, windows: 0 });
    // A stored digest that is wrong on every row is caught, never taken as clean...
    await ctx.dbs.v2.query(`ALTER TABLE telemetry ALTER COLUMN row_digest SET EXPRESSION AS (0)`);
    expect(await verify()).toEqual({ clean: false, windows: 6 });
    // ...and one whose comment names another digest is not read at all: the rows are hashed.
    await ctx.dbs.v2.query(`COMMENT ON COLUMN telemetry.row_digest IS 'some older digest'`);
    expect(await verify()).toEqual({ clean: true, windows: 0 });
    // Without the column (as on TimescaleDB) a changed value is still found.
    await ctx.dbs.v2.query(`ALTER TABLE telemetry DROP COLUMN row_digest`);
    expect(await verify()).toEqual({ clean: true, windows: 0 });
    await ctx.dbs.v2.query(`UPDATE telemetry SET protocol = 'changed' WHERE legacy_id = 1200`);
    expect(await verify()).toEqual({ clean: false, windows: 1 });
  });
});
