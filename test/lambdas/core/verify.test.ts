import { Pool } from 'pg';
import { runBackfillLocally } from '../../../lambdas/adapters/local/local-backfill';
import { runVerificationLocally } from '../../../lambdas/adapters/local/local-verify';
import { recheckInFlight, verificationFailure, type VerificationReport } from '../../../lambdas/core/verify';
import { freshDatabases, type TestDatabases } from '../../support/pg';
import { seedV1, testConfig } from '../../support/fixtures';
import { prepared } from '../../support/migration';
import {
  describeEachStorage,
  describeOnTimescale,
  HYPERTABLE,
  PARTITIONS,
  type StorageCase,
} from '../../support/servers';

const batch = { telemetryWindowRows: 1000, entityWindowRows: 9, concurrency: 2, maxReceiveCount: 3 };

async function migrated(prefix: string, storage: StorageCase = PARTITIONS) {
  const dbs = await freshDatabases(prefix, storage.server);
  await seedV1(dbs.v1, { devices: 30, telemetry: 6000, seed: 21 });
  const config = testConfig(dbs, { batch });
  await prepared(dbs, config);
  const deps = { v1: dbs.v1, v2: dbs.v2, config };
  await runBackfillLocally(deps);
  return { dbs, config, deps };
}

/** Every difference of a report as `table key kind [columns]`. */
function findings(report: VerificationReport): string[] {
  return report.mismatches
    .flatMap((m) =>
      m.differences.map(
        (d) =>
          `${m.table} ${d.key} ${d.kind}${d.columns ? ` ${d.columns.map((c) => c.column).join(',')}` : ''}`,
      ),
    )
    .sort();
}

/** Puts a V2 telemetry row read with `SELECT *` back as it was (its V2 half lands). */
const putBack = (v2: Pool, row: Record<string, unknown>) =>
  v2.query(
    `INSERT INTO telemetry (tenant_id, device_id, "timestamp", metrics, protocol, source, quality, legacy_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
    [
      row.tenant_id,
      row.device_id,
      row.timestamp,
      row.metrics,
      row.protocol,
      row.source,
      row.quality,
      row.legacy_id,
    ],
  );

const nth = async (dbs: TestDatabases, table: string, key: string, n: number) =>
  String(
    (await dbs.v2.query(`SELECT ${key} AS k FROM ${table} ORDER BY ${key} OFFSET $1 LIMIT 1`, [n])).rows[0].k,
  );

describeEachStorage('verification', (storage) => {
  let ctx: Awaited<ReturnType<typeof migrated>>;
  beforeAll(async () => {
    ctx = await migrated('verify', storage);
    expect(
      (await ctx.dbs.v2.query('SELECT kind FROM migration_control.telemetry_storage')).rows[0].kind,
    ).toBe(storage.storage);
  });
  afterAll(() => ctx.dbs.drop());

  it('finds nothing on a clean copy, whatever the sessions’ time zones and JSON key order', async () => {
    // V2 reads instants in another zone than V1; JSON rewritten with other key order and spacing.
    await ctx.dbs.v2.query(`ALTER DATABASE "${ctx.dbs.v2Name}" SET TimeZone = 'America/New_York'`);
    await ctx.dbs.v1.query(`ALTER DATABASE "${ctx.dbs.v1Name}" SET TimeZone = 'Asia/Kolkata'`);
    await ctx.dbs.v2.query(
      `UPDATE telemetry SET metrics = '{"humidity": 50,   "temperature": 21.5}'::jsonb WHERE legacy_id = 7`,
    );
    await ctx.dbs.v1.query(
      `UPDATE device_data SET data = '{"temperature":21.5,"humidity":50}'::jsonb WHERE id = 7`,
    );
    const report = await runVerificationLocally(ctx.deps, { sampleSize: 200, repair: false });
    expect(findings(report)).toEqual([]);
    expect(report.clean).toBe(true);
    expect(report.sample.checked).toBeGreaterThan(100);
    expect(report.tables.telemetry).toEqual({ windows: 6, mismatched: 0, v1Rows: 6000, v2Rows: 6000 });
    const run = await ctx.dbs.v2.query(
      'SELECT status, finished_at FROM migration_control.verification_runs WHERE id = $1',
      [report.runId],
    );
    expect(run.rows[0].status).toBe('passed');
    // The six telemetry windows form one slice, whose totals matched: they are recorded on the
    // slice, and its windows as matched without counts of their own.
    const slices = await ctx.dbs.v2.query(
      `SELECT cardinality(window_ids) AS windows, v1_rows::int, v2_rows::int, v1_checksum = v2_checksum AS same, matched
         FROM migration_control.verification_slices WHERE run_id = $1 AND table_name = 'telemetry'`,
      [report.runId],
    );
    expect(slices.rows).toEqual([{ windows: 6, v1_rows: 6000, v2_rows: 6000, same: true, matched: true }]);
    const windows = await ctx.dbs.v2.query(
      `SELECT v.matched, v.v1_rows FROM migration_control.verification_windows v
         JOIN migration_control.windows w ON w.id = v.window_id WHERE v.run_id = $1 AND w.table_name = 'telemetry'`,
      [report.runId],
    );
    expect(windows.rows).toEqual(Array(6).fill({ matched: true, v1_rows: null }));
  });

  it('names every kind of discrepancy exactly (a row moved to another tenant is missing); repair fixes the migrated tenant’s rows, never another tenant’s', async () => {
    const v2 = ctx.dbs.v2;
    const expected: string[] = [];
    const moved: string[] = [];
    let n = 0;
    const change = async (table: string, key: string, column: string, setSql: string) => {
      const k = await nth(ctx.dbs, table, key, n++);
      await v2.query(`UPDATE ${table} SET ${setSql} WHERE ${key} = $1`, [k]);
      // A row moved to another tenant is not the migrated tenant's any more: it is missing there.
      expected.push(`${table} ${k} ${column === 'tenant_id' ? 'missing' : `changed ${column}`}`);
      if (column === 'tenant_id') moved.push(`${table} ${k} missing`);
    };
    await v2.query(
      `INSERT INTO tenants (id, name, slug, plan, status) VALUES ('other', 'Other', 'other', 'FREE', 'ACTIVE')`,
    );
    await v2.query(
      `INSERT INTO device_templates (id, tenant_id, device_type, name) VALUES ('tpl_other', 'default_tenant_id', 'not-a-v1-type', 'x')`,
    );
    const anotherUser = await nth(ctx.dbs, 'users', 'id', 0);
    const anotherDevice = await nth(ctx.dbs, 'devices', 'id', 0);
    n = 0;
    // users (3 rows): one column each
    await change('users', 'id', 'name', `name = coalesce(name, '') || ' changed'`);
    await change('users', 'id', 'password_hash', `password_hash = 'changed'`);
    await change('users', 'id', 'created_at', `created_at = created_at + interval '1 millisecond'`);
    n = 1;
    for (const [column, set] of [
      ['tenant_id', `tenant_id = 'other'`],
      ['template_id', `template_id = 'tpl_other'`],
      ['name', `name = 'changed'`],
      ['status', `status = 'CHANGED'`],
      ['attributes', `attributes = attributes || '{"changed": true}'`],
      ['metadata', `metadata = '{"migratedFrom": "v1", "originalType": "other"}'`],
      ['owner_id', `owner_id = CASE WHEN owner_id IS NULL THEN '${anotherUser}' ELSE NULL END`],
      ['last_seen_at', `last_seen_at = coalesce(last_seen_at, now()) + interval '1 second'`],
      ['updated_at', `updated_at = updated_at + interval '1 day'`],
    ]) {
      await change('devices', 'id', column, set);
    }
    n = 10;
    for (const [column, set] of [
      ['tenant_id', `tenant_id = 'other'`],
      [
        'device_id',
        `device_id = CASE WHEN device_id = '${anotherDevice}' THEN '${await nth(ctx.dbs, 'devices', 'id', 1)}' ELSE '${anotherDevice}' END`,
      ],
      ['timestamp', `"timestamp" = "timestamp" + interval '1 millisecond'`],
      ['metrics', `metrics = '{"changed": 1}'`],
      ['protocol', `protocol = 'CHANGED'`],
      ['source', `source = 'changed'`],
      ['quality', `quality = 'BAD'`],
    ]) {
      n += 700;
      await change('telemetry', 'legacy_id', column, set);
    }
    n = 3;
    for (const [column, set] of [
      ['device_id', `device_id = '${anotherDevice}'`],
      ['severity', `severity = 'CHANGED'`],
      ['message', `message = message || ' (edited)'`],
      ['status', `status = 'CHANGED'`],
      ['created_at', `created_at = created_at - interval '5 minutes'`],
      ['resolved_at', `resolved_at = coalesce(resolved_at, now()) + interval '1 minute'`],
    ]) {
      n += 7;
      await change('alerts', 'id', column, set);
    }
    // A missing row, an extra row, in telemetry and alerts.
    const gone = await nth(ctx.dbs, 'telemetry', 'legacy_id', 4321);
    await v2.query('DELETE FROM telemetry WHERE legacy_id = $1', [gone]);
    expected.push(`telemetry ${gone} missing`);
    const goneAlert = await nth(ctx.dbs, 'alerts', 'id', 1);
    await v2.query('DELETE FROM alerts WHERE id = $1', [goneAlert]);
    expected.push(`alerts ${goneAlert} missing`);
    await v2.query(
      `INSERT INTO alerts (id, tenant_id, device_id, severity, message, status, created_at) VALUES ('zzzz_extra', 'default_tenant_id', $1, 'LOW', 'x', 'OPEN', now())`,
      [anotherDevice],
    );
    expected.push('alerts zzzz_extra extra');
    await v2.query(
      `INSERT INTO telemetry (tenant_id, device_id, "timestamp", metrics, protocol, source, quality, legacy_id)
       SELECT tenant_id, device_id, "timestamp", metrics, protocol, source, quality, 999999 FROM telemetry WHERE legacy_id = 100`,
    );
    expected.push('telemetry 999999 extra');

    const report = await runVerificationLocally(ctx.deps, { repair: false });
    expect(report.clean).toBe(false);
    expect(findings(report)).toEqual(expected.sort());
    for (const m of report.mismatches)
      expect(m.v1Rows === m.v2Rows || m.differences.some((d) => d.kind !== 'changed')).toBe(true);
    // Slices that differ are counted window by window: every window has its own counts then.
    const counted = await v2.query(
      `SELECT count(*)::int AS n, count(v1_rows)::int AS counted, sum(v1_rows)::int AS v1, sum(v2_rows)::int AS v2
         FROM migration_control.verification_windows v JOIN migration_control.windows w ON w.id = v.window_id
        WHERE v.run_id = $1 AND w.table_name = 'telemetry'`,
      [report.runId],
    );
    // The row moved to another tenant is not counted (one deleted, one extra, one moved away).
    expect(counted.rows[0]).toEqual({ n: 6, counted: 6, v1: 6000, v2: 5999 });
    expect(report.tables.telemetry).toMatchObject({ v1Rows: 6000, v2Rows: 5999 });

    // Repair fixes every row of the migrated tenant, and never overwrites another tenant's row
    // that holds a migrated key: those two stay missing, named.
    expect(moved).toHaveLength(2);
    const partly = await runVerificationLocally(ctx.deps);
    expect(partly.repaired.length).toBeGreaterThan(0);
    expect(partly.clean).toBe(false);
    const left = await runVerificationLocally(ctx.deps, { repair: false });
    expect(findings(left)).toEqual(moved.sort());
    const others = async () =>
      Promise.all(
        ['devices', 'telemetry'].map(
          async (t) =>
            (await v2.query(`SELECT count(*)::int AS n FROM ${t} WHERE tenant_id = 'other'`)).rows[0]
              .n as number,
        ),
      );
    expect(await others()).toEqual([1, 1]);

    // Given back to the migrated tenant, the last two are repaired too.
    await v2.query(`UPDATE devices SET tenant_id = 'default_tenant_id' WHERE tenant_id = 'other'`);
    await v2.query(`UPDATE telemetry SET tenant_id = 'default_tenant_id' WHERE tenant_id = 'other'`);
    const repaired = await runVerificationLocally(ctx.deps);
    expect(repaired.repaired.every((r) => r.clean)).toBe(true);
    expect(repaired.clean).toBe(true);
    const again = await runVerificationLocally(ctx.deps, { repair: false, sampleSize: 300 });
    expect(findings(again)).toEqual([]);
    expect(again.clean).toBe(true);
  });

  it('catches a row deleted on V1 that the backfill had already put in V2, and repair removes it', async () => {
    // The backfill read the row, then the backend deleted it on V1 (its V2 delete found nothing
    // yet), then the backfill wrote it: V2 holds a row V1 no longer has.
    const row = (await ctx.dbs.v1.query('SELECT id FROM device_data ORDER BY id OFFSET 2500 LIMIT 1')).rows[0]
      .id;
    await ctx.dbs.v1.query('DELETE FROM device_data WHERE id = $1', [row]);
    const report = await runVerificationLocally(ctx.deps, { repair: false });
    expect(findings(report)).toEqual([`telemetry ${row} extra`]);
    const repaired = await runVerificationLocally(ctx.deps);
    expect(repaired.clean).toBe(true);
    expect(
      (await ctx.dbs.v2.query('SELECT count(*)::int AS n FROM telemetry WHERE legacy_id = $1', [row])).rows[0]
        .n,
    ).toBe(0);
  });

  it('re-verifies only the windows touched since a time', async () => {
    const since = new Date();
    await new Promise((r) => setTimeout(r, 20));
    const user = (await ctx.dbs.v1.query('SELECT id FROM users ORDER BY id LIMIT 1')).rows[0].id;
    await ctx.dbs.v1.query(
      `UPDATE users SET name = 'touched', "updatedAt" = (now() AT TIME ZONE 'UTC') WHERE id = $1`,
      [user],
    );
    const report = await runVerificationLocally(ctx.deps, { since, repair: false, sampleSize: 0 });
    expect(report.scope).toBe('incremental');
    // The touched users window, each table's open last window, and the windows of rows dated
    // after `since` (the generator's rows at the end of time): a small part of all windows.
    const checked = Object.values(report.tables).reduce((a, t) => a + t.windows, 0);
    const total = Number(
      (await ctx.dbs.v2.query(`SELECT count(*) AS n FROM migration_control.windows`)).rows[0].n,
    );
    expect(checked).toBeLessThanOrEqual(8);
    expect(checked).toBeLessThan(total / 2);
    expect(findings(report)).toEqual([`users ${user} changed name,updated_at`]);
  });
});

describeOnTimescale('verification of compressed chunks', () => {
  let ctx: Awaited<ReturnType<typeof migrated>>;
  beforeAll(async () => {
    ctx = await migrated('verify_compressed', HYPERTABLE);
    const compressed = await ctx.dbs.v2.query(
      `SELECT count(compress_chunk(c))::int AS n FROM show_chunks('telemetry') c`,
    );
    expect(compressed.rows[0].n).toBeGreaterThan(1);
  });
  afterAll(() => ctx.dbs.drop());

  const at = async (legacyId: string) =>
    (await ctx.dbs.v2.query('SELECT "timestamp" FROM telemetry WHERE legacy_id = $1', [legacyId])).rows[0]
      .timestamp as Date;

  it('sums the digest stored in compressed chunks, finds rows changed in them, and repair fixes them', async () => {
    const stored = await ctx.dbs.v2.query(
      `SELECT count(*)::int AS n, count(row_digest)::int AS digests FROM telemetry`,
    );
    expect(stored.rows).toEqual([{ n: 6000, digests: 6000 }]);
    expect((await runVerificationLocally(ctx.deps, { repair: false, sampleSize: 200 })).clean).toBe(true);

    const [changed, gone] = [
      await nth(ctx.dbs, 'telemetry', 'legacy_id', 10),
      await nth(ctx.dbs, 'telemetry', 'legacy_id', 3000),
    ];
    await ctx.dbs.v2.query(
      `UPDATE telemetry SET metrics = '{"changed": true}' WHERE legacy_id = $1 AND "timestamp" = $2`,
      [changed, await at(changed)],
    );
    await ctx.dbs.v2.query('DELETE FROM telemetry WHERE legacy_id = $1 AND "timestamp" = $2', [
      gone,
      await at(gone),
    ]);
    const report = await runVerificationLocally(ctx.deps, { repair: false });
    expect(findings(report)).toEqual(
      [`telemetry ${changed} changed metrics`, `telemetry ${gone} missing`].sort(),
    );
    const repaired = await runVerificationLocally(ctx.deps);
    expect(repaired.clean).toBe(true);
    expect(repaired.repaired.length).toBeGreaterThan(0);
    expect(repaired.repaired.every((r) => r.clean)).toBe(true);
    const chunks = await ctx.dbs.v2.query(
      `SELECT count(*)::int AS n FROM timescaledb_information.chunks WHERE hypertable_name = 'telemetry' AND is_compressed`,
    );
    expect(chunks.rows[0].n).toBeGreaterThan(0);
  });
});

describe('verification: deep-compare findings and writes in flight', () => {
  let ctx: Awaited<ReturnType<typeof migrated>>;
  beforeAll(async () => {
    ctx = await migrated('verify_flight');
  });
  afterAll(() => ctx.dbs.drop());

  /** Runs a verification, calling `afterSlices` once every slice is checked (before the report). */
  const verify = (
    options: Parameters<typeof runVerificationLocally>[1],
    afterSlices: () => Promise<void>,
  ) => {
    let done = false;
    return runVerificationLocally(ctx.deps, {
      sampleSize: 1000,
      ...options,
      // Awaited by the run: the change lands after the slices are checked, before the report.
      onProgress: async (p) => {
        if (p.slicesDone === p.slices && !done) {
          done = true;
          await afterSlices();
        }
      },
    });
  };

  it('re-syncs a row that only the deep compare finds, and checks it again', async () => {
    const user = await nth(ctx.dbs, 'users', 'id', 1);
    const report = await verify({ recheckDelayMs: 50 }, async () => {
      // Changed after its window was checked: only the sample can see it.
      await ctx.dbs.v2.query(`UPDATE users SET name = 'tampered' WHERE id = $1`, [user]);
    });
    expect(report.mismatches).toEqual([]);
    expect(report.recheck).toMatchObject({ rows: 1, rowsSettled: 0 });
    expect(report.repairedRows).toEqual([{ table: 'users', key: user, clean: true }]);
    expect(report.sample.differences).toEqual([]);
    expect(report.clean).toBe(true);
    const v1 = await ctx.dbs.v1.query(`SELECT name FROM users WHERE id = $1`, [user]);
    const v2 = await ctx.dbs.v2.query(`SELECT name FROM users WHERE id = $1`, [user]);
    expect(v2.rows[0].name).toBe(v1.rows[0].name);
  });

  it('names a sampled row that repair cannot fix, with counts that agree with the report', async () => {
    const user = await nth(ctx.dbs, 'users', 'id', 2);
    await ctx.dbs.v2.query(`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'refused by test'; END $$`);
    try {
      const report = await verify({ recheckDelayMs: 50 }, async () => {
        await ctx.dbs.v2.query(`UPDATE users SET name = 'tampered' WHERE id = $1`, [user]);
        await ctx.dbs.v2.query(
          `CREATE TRIGGER refuse BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION refuse()`,
        );
      });
      expect(report.clean).toBe(false);
      expect(report.mismatches).toEqual([]);
      expect(report.sample.differences).toEqual([
        {
          table: 'users',
          key: user,
          kind: 'changed',
          columns: [{ column: 'name', v1: expect.any(String), v2: 'tampered' }],
        },
      ]);
      expect(report.repairedRows).toEqual([
        { table: 'users', key: user, clean: false, error: expect.stringContaining('refused by test') },
      ]);
      const error = verificationFailure(report);
      expect(error.name).toBe('VerificationFailedError');
      expect(error.message).toBe(
        `Verification failed: 1 sampled row(s) (users ${user} changed) still differ after repair`,
      );
      const run = await ctx.dbs.v2.query(
        `SELECT status FROM migration_control.verification_runs WHERE id = $1`,
        [report.runId],
      );
      expect(run.rows[0].status).toBe('failed');
    } finally {
      await ctx.dbs.v2.query(`DROP TRIGGER IF EXISTS refuse ON users; DROP FUNCTION refuse()`);
      await ctx.dbs.v2.query(
        `UPDATE users SET name = v.name FROM (SELECT $2::text AS name) v WHERE id = $1`,
        [user, (await ctx.dbs.v1.query(`SELECT name FROM users WHERE id = $1`, [user])).rows[0].name],
      );
    }
  });

  it('does not count a window or a row whose V2 half lands within the re-check delay', async () => {
    const legacyId = await nth(ctx.dbs, 'telemetry', 'legacy_id', 1234);
    const user = await nth(ctx.dbs, 'users', 'id', 0);
    const row = (await ctx.dbs.v2.query(`SELECT * FROM telemetry WHERE legacy_id = $1`, [legacyId])).rows[0];
    const name = (await ctx.dbs.v2.query(`SELECT name FROM users WHERE id = $1`, [user])).rows[0].name;
    // A V1 insert whose V2 half has not landed yet when the window is checked, and a V1 update
    // whose V2 half is still on its way when the sample reads it.
    await ctx.dbs.v2.query(`DELETE FROM telemetry WHERE legacy_id = $1`, [legacyId]);
    const found = await verify({ recheckDelayMs: 10, repair: false }, async () => {
      await ctx.dbs.v2.query(`UPDATE users SET name = 'in flight' WHERE id = $1`, [user]);
    });
    // Nothing has landed yet: both differences are still there after the re-check.
    expect(found.clean).toBe(false);
    expect(found.recheck).toMatchObject({ windows: 1, windowsSettled: 0, rowsSettled: 0 });
    expect(found.sample.differences).toContainEqual(expect.objectContaining({ table: 'users', key: user }));
    // Now the two V2 halves land; the re-check of the same findings no longer counts them.
    await putBack(ctx.dbs.v2, row);
    await ctx.dbs.v2.query(`UPDATE users SET name = $2 WHERE id = $1`, [user, name]);
    const report = await recheckInFlight(ctx.deps, found, 10);
    const rows = found.mismatches[0].differences.length + found.sample.differences.length;
    expect(report.recheck).toEqual({ delayMs: 10, windows: 1, windowsSettled: 1, rows, rowsSettled: rows });
    expect(report.mismatches).toEqual([]);
    expect(report.sample.differences).toEqual([]);
    expect(report.clean).toBe(true);
    expect(report.tables.telemetry.mismatched).toBe(0);
  });

  it('does not count a window whose mismatch no look explained once, when a later look finds it settled', async () => {
    // A V2 half still on its way when the window's checksums are taken, which lands before the
    // rows are read: the look at the rows finds nothing to explain the mismatch. It is a write
    // in flight all the same, not a wrong stored digest.
    const legacyId = await nth(ctx.dbs, 'telemetry', 'legacy_id', 3456);
    const row = (await ctx.dbs.v2.query(`SELECT * FROM telemetry WHERE legacy_id = $1`, [legacyId])).rows[0];
    await ctx.dbs.v2.query(`DELETE FROM telemetry WHERE legacy_id = $1`, [legacyId]);
    const found = await verify({ recheckDelayMs: 10, repair: false }, async () => undefined);
    expect(found.mismatches.map((m) => m.differences.map((d) => `${d.key} ${d.kind}`))).toEqual([
      [`${legacyId} missing`],
    ]);
    const unexplained = { ...found, mismatches: [{ ...found.mismatches[0], differences: [] }] };
    // The row lands (through a connection of its own) when the first re-check round reads the
    // window's rows.
    let landed = false;
    const writer = new Pool({ ...ctx.dbs.v2.options, max: 1 });
    const v2 = new Proxy(ctx.dbs.v2, {
      get(target, prop, receiver) {
        if (prop !== 'connect') return Reflect.get(target, prop, receiver) as unknown;
        // pool.query() connects with a callback: passed through as it is.
        return async (callback?: never) => {
          if (callback) return target.connect(callback);
          const client = await target.connect();
          return new Proxy(client, {
            get(c, p, r) {
              if (p !== 'query') return Reflect.get(c, p, r) as unknown;
              return async (text: string, values?: unknown[]) => {
                if (!landed && typeof text === 'string' && / AS digest FROM /.test(text)) {
                  landed = true;
                  await putBack(writer, row);
                }
                return c.query(text, values);
              };
            },
          });
        };
      },
    });
    const report = await recheckInFlight({ ...ctx.deps, v2 }, unexplained, 10).finally(() => writer.end());
    expect(landed).toBe(true);
    expect(report.recheck).toMatchObject({ windows: 1, windowsSettled: 1 });
    expect(report.mismatches).toEqual([]);
  });

  it('still counts a difference that is there after the re-check delay', async () => {
    const legacyId = await nth(ctx.dbs, 'telemetry', 'legacy_id', 2345);
    await ctx.dbs.v2.query(`UPDATE telemetry SET source = 'drifted' WHERE legacy_id = $1`, [legacyId]);
    const report = await runVerificationLocally(ctx.deps, {
      recheckDelayMs: 50,
      repair: false,
      sampleSize: 10,
    });
    expect(report.recheck).toMatchObject({ windows: 1, windowsSettled: 0 });
    expect(findings(report)).toEqual([`telemetry ${legacyId} changed source`]);
    expect(report.clean).toBe(false);
    expect(verificationFailure(report).message).toBe('Verification failed: 1 window(s) still differ');
    await runVerificationLocally(ctx.deps, { recheckDelayMs: 50 });
  });
});
