import { runBackfillLocally } from '../../../lambdas/adapters/local/local-backfill';
import { planBackfill, type BackfillDeps } from '../../../lambdas/core/backfill';
import { freshDatabases } from '../../support/pg';
import { seedV1, testConfig } from '../../support/fixtures';
import { prepared } from '../../support/migration';
import { expectAllInSync } from '../../support/in-sync';

/**
 * A large time-keyed table is planned from a row sample (lambdas/core/backfill/plan.ts): here a
 * 12,000-row telemetry table is planned so (threshold 0) and must still be copied exactly.
 */
describe('backfill plan from a sample', () => {
  const small = {
    batch: { telemetryWindowRows: 2000, entityWindowRows: 50, concurrency: 2, maxReceiveCount: 3 },
  };
  let ctx: { dbs: Awaited<ReturnType<typeof freshDatabases>>; deps: BackfillDeps } | undefined;
  afterAll(() => ctx?.dbs.drop());

  it('covers every row once with windows near the target size, and the backfill copies them exactly', async () => {
    const dbs = await freshDatabases('plan_sample');
    await seedV1(dbs.v1, { devices: 20, telemetry: 12_000, seed: 7 });
    const config = testConfig(dbs, small);
    await prepared(dbs, config);
    ctx = { dbs, deps: { v1: dbs.v1, v2: dbs.v2, config } };

    const plan = await planBackfill(ctx.deps, { sampleAboveRows: 0 });
    expect(plan.tables.telemetry.expectedRows).toBe(12_000);
    const windows = await dbs.v2.query<{ lower: { ts: string; id: string } | null; expected: number }>(
      `SELECT lower_bound AS lower, expected_rows::int AS expected FROM migration_control.windows
        WHERE table_name = 'telemetry' ORDER BY seq`,
    );
    expect(windows.rows.length).toBeGreaterThanOrEqual(4);
    expect(windows.rows.length).toBeLessThanOrEqual(9);
    expect(windows.rows.reduce((a, w) => a + w.expected, 0)).toBe(12_000);
    // The boundaries come from the sample, not from numbering every row (every 2,000th key).
    const exact = await dbs.v1.query<{ ts: string; id: string }>(
      `SELECT ts::text AS ts, id::text AS id FROM (
         SELECT "timestamp" AS ts, id, row_number() OVER (ORDER BY "timestamp", id) AS rn FROM device_data) s
        WHERE rn % 2000 = 1 AND rn > 1 ORDER BY s.ts, s.id`,
    );
    const starts = windows.rows.slice(1).map((w) => w.lower);
    expect(starts).not.toEqual(exact.rows);

    const progress = await runBackfillLocally(ctx.deps);
    expect(progress.complete).toBe(true);
    await expectAllInSync(dbs, config);
    const copied = await dbs.v2.query<{ n: number }>(
      `SELECT rows_copied::int AS n FROM migration_control.windows WHERE table_name = 'telemetry' ORDER BY seq`,
    );
    expect(copied.rows.reduce((a, r) => a + r.n, 0)).toBe(12_000);
    // Near the target: none tiny, none several windows' worth.
    for (const { n } of copied.rows) {
      expect(n).toBeGreaterThan(1000);
      expect(n).toBeLessThan(3000);
    }
  });
});
