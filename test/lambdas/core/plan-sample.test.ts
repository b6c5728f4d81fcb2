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

/**
 * On native partitions, planning creates the monthly partitions V1 telemetry needs: every month
 * between the first and the last window boundary (months without rows between them included),
 * and, before and after them, only the months that hold a row (odd rows far from the rest); or
 * only months that hold a row where there is one window.
 */
describe('backfill plan: monthly partitions', () => {
  let dbs: Awaited<ReturnType<typeof freshDatabases>> | undefined;
  const dropLast = async () => {
    await dbs?.drop();
    dbs = undefined;
  };
  afterEach(dropLast);

  /** Monthly partitions' names, from their months (YYYYMM). */
  const partitions = (...months: string[]) => months.map((m) => `telemetry_p${m}`);

  /** V1 telemetry: `n` rows a minute apart from each start, in windows of 100 rows. */
  const planWith = async (name: string, runs: { from: string; n: number }[]) => {
    await dropLast();
    dbs = await freshDatabases(name);
    await seedV1(dbs.v1, { devices: 2, telemetry: 0, seed: 3 });
    for (const run of runs) {
      await dbs.v1.query(
        `INSERT INTO device_data ("deviceId", "timestamp", data, protocol, source)
         SELECT (SELECT min(id) FROM devices), $1::timestamp + i * interval '1 minute', '{}'::jsonb, 'MQTT', 'sensor'
           FROM generate_series(0, $2 - 1) AS i`,
        [run.from, run.n],
      );
    }
    const config = testConfig(dbs, {
      telemetryStorage: 'partitioned',
      batch: { telemetryWindowRows: 100, entityWindowRows: 50, concurrency: 2, maxReceiveCount: 3 },
    });
    await prepared(dbs, config);
    const plan = await planBackfill({ v1: dbs.v1, v2: dbs.v2, config });
    // Phase 1 made the months around today; these are the ones before them.
    const months = plan.partitionsCreated.filter((p) => p < 'telemetry_p202611').sort();
    return { plan, months, dbs, config };
  };

  it('creates every month between the first and last window boundary, months without rows included', async () => {
    const {
      months,
      dbs: d,
      config,
    } = await planWith('plan_months_span', [
      { from: '2025-11-30 22:00:00', n: 150 },
      { from: '2026-02-01 00:00:00', n: 150 },
    ]);
    expect(months).toEqual(partitions('202511', '202512', '202601', '202602'));
    const progress = await runBackfillLocally({ v1: d.v1, v2: d.v2, config });
    expect(progress.complete).toBe(true);
    const homes = await d.v2.query<{ home: string; n: number }>(
      `SELECT tableoid::regclass::text AS home, count(*)::int AS n FROM telemetry GROUP BY 1 ORDER BY 1`,
    );
    expect(homes.rows).toEqual([
      { home: 'telemetry_p202511', n: 120 },
      { home: 'telemetry_p202512', n: 30 },
      { home: 'telemetry_p202602', n: 150 },
    ]);
  });

  it('gives odd rows far from the rest their own month, and no month between them and the rest', async () => {
    const { months } = await planWith('plan_months_odd', [
      { from: '1990-06-15 00:00:00', n: 1 },
      { from: '2026-01-10 00:00:00', n: 150 },
      { from: '2026-03-10 00:00:00', n: 150 },
      { from: '2999-12-31 23:00:00', n: 1 },
    ]);
    expect(months).toEqual(partitions('199006', '202601', '202602', '202603'));
    const late = (
      await planWith('plan_months_late', [
        { from: '2026-01-10 00:00:00', n: 250 },
        { from: '2999-12-31 23:00:00', n: 1 },
      ])
    ).plan;
    expect(late.partitionsCreated).toContain('telemetry_p299912');
  });

  it('creates only the months that hold a row where there is one window', async () => {
    const { months } = await planWith('plan_months_one', [
      { from: '2025-09-01 00:00:00', n: 20 },
      { from: '2026-01-01 00:00:00', n: 20 },
    ]);
    expect(months).toEqual(partitions('202509', '202601'));
  });
});
