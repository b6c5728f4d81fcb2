import { runBackfillLocally } from '../../../lambdas/adapters/local/local-backfill';
import { runVerificationLocally } from '../../../lambdas/adapters/local/local-verify';
import { repairWindow } from '../../../lambdas/core/verify/repair';
import { freshDatabases, type TestDatabases } from '../../support/pg';
import { seedV1, testConfig } from '../../support/fixtures';
import { prepared } from '../../support/migration';
import { describeEachStorage, type StorageCase } from '../../support/servers';

/**
 * V2 is multi-tenant: once the write switch makes V2 the primary, other tenants' rows live in
 * the very key ranges the migration's windows cover. Verification must neither count them nor
 * explain them, and repair must never delete or overwrite them.
 */

const OTHER = 'other_tenant';
const batch = { telemetryWindowRows: 400, entityWindowRows: 5, concurrency: 2, maxReceiveCount: 3 };

async function migrated(storage: StorageCase) {
  const dbs = await freshDatabases('tenants', storage.server);
  await seedV1(dbs.v1, { devices: 12, telemetry: 1500, seed: 17 });
  const config = testConfig(dbs, { batch });
  await prepared(dbs, config);
  const deps = { v1: dbs.v1, v2: dbs.v2, config };
  await runBackfillLocally(deps);
  return { dbs, deps };
}

/** Another tenant's rows, each inside the key range (or time range) of a migrated window. */
async function addOtherTenant(dbs: TestDatabases): Promise<void> {
  const v2 = dbs.v2;
  await v2.query(
    `INSERT INTO tenants (id, name, slug, plan, status) VALUES ($1, 'Other', 'other', 'STARTER', 'ACTIVE')`,
    [OTHER],
  );
  await v2.query(
    `INSERT INTO device_templates (id, tenant_id, device_type, name) VALUES ('tpl_other', $1, 'sensor', 'sensor')`,
    [OTHER],
  );
  // Ids right after migrated ones ("~" sorts after letters and digits): in the same windows.
  await v2.query(
    `INSERT INTO users (id, tenant_id, email, name, password_hash, role, updated_at)
     SELECT id || '~other', $1, 'other-' || email, name, 'x', role, now() FROM users WHERE tenant_id <> $1`,
    [OTHER],
  );
  await v2.query(
    `INSERT INTO devices (id, tenant_id, template_id, name, status, attributes, metadata, updated_at)
     SELECT id || '~other', $1, 'tpl_other', name, status, '{}', '{}', now() FROM devices WHERE tenant_id <> $1`,
    [OTHER],
  );
  await v2.query(
    `INSERT INTO alerts (id, tenant_id, device_id, severity, message, status)
     SELECT id || '~other', $1, device_id || '~other', severity, message, status FROM alerts WHERE tenant_id <> $1`,
    [OTHER],
  );
  // Telemetry at the migrated rows' times: native V2 rows (no legacy_id), and rows carrying a
  // legacy_id of their own tenant's history (a V1 of theirs) a millisecond later.
  await v2.query(
    `INSERT INTO telemetry (tenant_id, device_id, "timestamp", metrics, protocol, source, legacy_id)
     SELECT $1, device_id || '~other', "timestamp" + CASE WHEN legacy_id % 2 = 0 THEN interval '0' ELSE interval '1 millisecond' END,
            metrics, protocol, 'other', CASE WHEN legacy_id % 2 = 0 THEN NULL ELSE legacy_id END
       FROM telemetry WHERE tenant_id <> $1`,
    [OTHER],
  );
}

/** The other tenant's rows, per table, as text: what must stay exactly as it is. */
async function otherTenantRows(dbs: TestDatabases): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const table of ['users', 'devices', 'alerts', 'telemetry']) {
    const order = table === 'telemetry' ? 'device_id, "timestamp"' : 'id';
    const columns =
      table === 'telemetry' ? 'tenant_id, device_id, "timestamp", metrics, source, legacy_id' : '*';
    const { rows } = await dbs.v2.query(
      `SELECT count(*)::int AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY ${order}), '')) AS h
         FROM (SELECT ${columns} FROM ${table} WHERE tenant_id = $1) t`,
      [OTHER],
    );
    out[table] = `${rows[0].n} ${rows[0].h}`;
  }
  return out;
}

describeEachStorage('verification and repair with other tenants in V2', (storage) => {
  let ctx: Awaited<ReturnType<typeof migrated>>;
  let before: Record<string, string>;
  beforeAll(async () => {
    ctx = await migrated(storage);
    await addOtherTenant(ctx.dbs);
    before = await otherTenantRows(ctx.dbs);
  });
  afterAll(() => ctx.dbs.drop());

  it('neither counts nor explains other tenants’ rows: a clean copy stays clean', async () => {
    for (const [table, rows] of Object.entries(before))
      expect({ table, rows: Number(rows.split(' ')[0]) > 0 }).toEqual({ table, rows: true });
    expect(Number(before.telemetry.split(' ')[0])).toBe(1500);
    const report = await runVerificationLocally(ctx.deps, { sampleSize: 100, repair: false });
    expect(report.mismatches).toEqual([]);
    expect(report.clean).toBe(true);
    for (const [table, totals] of Object.entries(report.tables)) {
      expect({ table, v2Rows: totals.v2Rows }).toEqual({ table, v2Rows: totals.v1Rows });
    }
    expect(report.tables.telemetry.v2Rows).toBe(1500);
    expect(await otherTenantRows(ctx.dbs)).toEqual(before);
  });

  it('repairs the migrated tenant’s rows of a window and leaves the other tenant’s rows of it alone', async () => {
    const user = (
      await ctx.dbs.v2.query(
        `SELECT id FROM users WHERE tenant_id <> $1 ORDER BY id LIMIT 1 OFFSET (SELECT count(*) / 2 FROM users WHERE tenant_id <> $1)`,
        [OTHER],
      )
    ).rows[0].id as string;
    const legacy = Number(
      (
        await ctx.dbs.v2.query(
          `SELECT legacy_id FROM telemetry WHERE tenant_id <> $1 ORDER BY legacy_id LIMIT 1 OFFSET 700`,
          [OTHER],
        )
      ).rows[0].legacy_id,
    );
    await ctx.dbs.v2.query(`UPDATE users SET name = 'tampered' WHERE id = $1`, [user]);
    await ctx.dbs.v2.query(`DELETE FROM telemetry WHERE tenant_id <> $1 AND legacy_id = $2`, [OTHER, legacy]);

    const found = await runVerificationLocally(ctx.deps, { sampleSize: 0, repair: false });
    // Only the two differences, named by the migrated tenant's keys.
    const keys = found.mismatches
      .flatMap((m) => m.differences.map((d) => `${m.table} ${d.key} ${d.kind}`))
      .sort();
    expect(keys).toEqual([`telemetry ${legacy} missing`, `users ${user} changed`]);
    for (const m of found.mismatches) expect(m.v2Rows).toBe(m.v1Rows - (m.table === 'telemetry' ? 1 : 0));

    // Window repair: the stale-row delete and the upsert see only the migrated tenant.
    for (const m of found.mismatches) await repairWindow(ctx.deps, m.windowId);
    const again = await runVerificationLocally(ctx.deps, { sampleSize: 100, repair: false });
    expect(again.mismatches).toEqual([]);
    expect(again.clean).toBe(true);
    expect(await otherTenantRows(ctx.dbs)).toEqual(before);
  });

  it('never overwrites another tenant’s row that holds a migrated key: the window stays mismatched, named', async () => {
    // Another tenant took over a migrated alert's id (say, after a delete and re-create in V2).
    const alert = (
      await ctx.dbs.v2.query(`SELECT id FROM alerts WHERE tenant_id <> $1 ORDER BY id LIMIT 1 OFFSET 2`, [
        OTHER,
      ])
    ).rows[0].id as string;
    const device = (await ctx.dbs.v2.query(`SELECT id FROM devices WHERE tenant_id = $1 LIMIT 1`, [OTHER]))
      .rows[0].id as string;
    await ctx.dbs.v2.query(
      `UPDATE alerts SET tenant_id = $1, device_id = $2, message = 'theirs' WHERE id = $3`,
      [OTHER, device, alert],
    );
    const theirs = await otherTenantRows(ctx.dbs);
    const report = await runVerificationLocally(ctx.deps, { sampleSize: 0 });
    expect(report.clean).toBe(false);
    expect(report.mismatches.map((m) => m.table)).toEqual(['alerts']);
    expect(report.mismatches[0].differences).toEqual([{ key: alert, kind: 'missing' }]);
    expect(report.repaired).toEqual([expect.objectContaining({ table: 'alerts', clean: false })]);
    expect(await otherTenantRows(ctx.dbs)).toEqual(theirs);
    const row = await ctx.dbs.v2.query(`SELECT tenant_id, message FROM alerts WHERE id = $1`, [alert]);
    expect(row.rows).toEqual([{ tenant_id: OTHER, message: 'theirs' }]);
  });
});
