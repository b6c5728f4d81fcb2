import { randomBytes } from 'node:crypto';
import { Pool } from 'pg';
import { runBackfillLocally } from '../../../lambdas/adapters/local/local-backfill';
import { planBackfill } from '../../../lambdas/core/backfill';
import { precreateChunks } from '../../../lambdas/core/backfill/chunks';
import type { MigrationConfig } from '../../../lambdas/core/config';
import { freshDatabases, testServer, testUrl, type TestDatabases } from '../../support/pg';
import { seedV1, testConfig } from '../../support/fixtures';
import { prepared } from '../../support/migration';
import { expectAllInSync } from '../../support/in-sync';
import { describeOnTimescale } from '../../support/servers';

/**
 * A hypertable's chunks for the backfill's time range are created when it is planned
 * (lambdas/core/backfill/chunks.ts), so no window's COPY creates one and holds the others up.
 */

const small = {
  batch: { telemetryWindowRows: 1000, entityWindowRows: 50, concurrency: 2, maxReceiveCount: 3 },
};

async function chunkNames(v2: Pool, config: MigrationConfig): Promise<string[]> {
  const { rows } = await v2.query<{ name: string }>(
    `SELECT format('%I.%I', chunk_schema, chunk_name) AS name FROM timescaledb_information.chunks
      WHERE hypertable_schema = $1 AND hypertable_name = 'telemetry' ORDER BY 1`,
    [config.schemas.v2],
  );
  return rows.map((r) => r.name);
}

describeOnTimescale('hypertable chunks made before the backfill copies', () => {
  let dbs: TestDatabases | undefined;
  afterEach(() => dbs?.drop());

  async function setup(prefix: string) {
    dbs = await freshDatabases(prefix, 'timescaledb');
    await seedV1(dbs.v1, { devices: 12, telemetry: 6000, seed: 21 });
    const config = testConfig(dbs, { ...small, telemetryStorage: 'timescaledb' });
    await prepared(dbs, config);
    return { dbs, config };
  }

  it('creates every chunk between the first and last window boundary at plan, leaves no row, and the backfill copies exactly', async () => {
    const { dbs: d, config } = await setup('chunks_plan');
    expect(await chunkNames(d.v2, config)).toEqual([]);
    const plan = await planBackfill({ v1: d.v1, v2: d.v2, config });
    expect(plan.chunksCreated.length).toBeGreaterThan(1);
    expect(await chunkNames(d.v2, config)).toEqual(plan.chunksCreated);
    // The rows that made them are gone: V2 telemetry is empty until the windows copy.
    expect((await d.v2.query(`SELECT count(*)::int AS n FROM telemetry`)).rows[0].n).toBe(0);

    const windows = await d.v2.query<{ lower: { ts: string } | null; upper: { ts: string } | null }>(
      `SELECT lower_bound AS lower, upper_bound AS upper FROM migration_control.windows
        WHERE table_name = 'telemetry' ORDER BY seq`,
    );
    const first = windows.rows[1].lower!.ts;
    const last = windows.rows[windows.rows.length - 1].lower!.ts;

    const progress = await runBackfillLocally({ v1: d.v1, v2: d.v2, config });
    expect(progress.complete).toBe(true);
    await expectAllInSync(d, config);
    // Every chunk holding a row between the first and the last boundary was made at plan.
    const holding = await d.v2.query<{ name: string }>(
      `SELECT DISTINCT tableoid::regclass::text AS name FROM telemetry
        WHERE "timestamp" BETWEEN ($1::timestamp AT TIME ZONE 'UTC') AND ($2::timestamp AT TIME ZONE 'UTC')`,
      [first, last],
    );
    expect(holding.rows.length).toBeGreaterThan(1);
    for (const { name } of holding.rows) expect(plan.chunksCreated).toContain(name);
  });

  it('creates none, changing nothing, where the role may not skip the foreign-key triggers', async () => {
    const { dbs: d, config } = await setup('chunks_role');
    const role = `chunks_${randomBytes(3).toString('hex')}`;
    await d.v2.query(`CREATE ROLE ${role} LOGIN PASSWORD '${role}'`);
    const limited = new Pool({
      connectionString: `postgres://${role}:${role}@127.0.0.1:${testServer('timescaledb').port}/${d.v2Name}`,
      max: 2,
    });
    try {
      await d.v2.query(`GRANT USAGE ON SCHEMA public TO ${role}`);
      await d.v2.query(`GRANT SELECT, INSERT, DELETE ON telemetry TO ${role}`);
      const made = await precreateChunks(limited, config, {
        first: '2026-01-01 00:00:00',
        last: '2026-03-01 00:00:00',
      });
      expect(made).toEqual([]);
      expect(await chunkNames(d.v2, config)).toEqual([]);
    } finally {
      await limited.end();
      await d.v2.query(`REVOKE ALL ON telemetry FROM ${role}`);
      await d.v2.query(`REVOKE ALL ON SCHEMA public FROM ${role}`);
      const admin = new Pool({ connectionString: testUrl('postgres', 'timescaledb'), max: 1 });
      await d.drop();
      dbs = undefined;
      await admin.query(`DROP ROLE IF EXISTS ${role}`);
      await admin.end();
    }
  });

  it('creates none where the time range covers more chunk intervals than it may make', async () => {
    const { dbs: d, config } = await setup('chunks_wide');
    const made = await precreateChunks(d.v2, config, {
      first: '1900-01-01 00:00:00',
      last: '2026-01-01 00:00:00',
    });
    expect(made).toEqual([]);
    expect(await chunkNames(d.v2, config)).toEqual([]);
  });
});
