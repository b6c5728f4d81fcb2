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
 * from its first row's to its last row's (months without rows between them included), or, where
 * odd rows put those more than ten years apart, only the months that hold a row.
 */
describe('backfill plan: monthly partitions', () => {
  let dbs: Awaited<ReturnType<typeof freshDatabases>> | undefined;
  afterEach(() => dbs?.drop());

  const planWith = async (name: string, timestamps: string[]) => {
    dbs = await freshDatabases(name);
    await seedV1(dbs.v1, { devices: 2, telemetry: 0, seed: 3 });
    await dbs.v1.query(
      `INSERT INTO device_data ("deviceId", "timestamp", data, protocol, source)
       SELECT (SELECT min(id) FROM devices), t::timestamp, '{}'::jsonb, 'MQTT', 'sensor' FROM unnest($1::text[]) AS t`,
      [timestamps],
    );
    const config = testConfig(dbs, { telemetryStorage: 'partitioned' });
    await prepared(dbs, config);
    const plan = await planBackfill({ v1: dbs.v1, v2: dbs.v2, config });
    const months = plan.partitionsCreated.filter((p) => p < 'telemetry_p2100');
    return { plan, months, dbs, config };
  };

  it('creates every month from the first row to the last, months without rows included', async () => {
    const {
      months,
      dbs: d,
      config,
    } = await planWith('plan_months_span', [
      '2025-11-30 23:59:59.999',
      '2026-02-01 00:00:00',
      '2026-02-14 10:00:00',
    ]);
    expect(months).toEqual(
      expect.arrayContaining([
        'telemetry_p202511',
        'telemetry_p202512',
        'telemetry_p202601',
        'telemetry_p202602',
      ]),
    );
    expect(months.filter((p) => p < 'telemetry_p202603')).toHaveLength(4);
    const progress = await runBackfillLocally({ v1: d.v1, v2: d.v2, config });
    expect(progress.complete).toBe(true);
    const homes = await d.v2.query<{ home: string }>(
      `SELECT tableoid::regclass::text AS home FROM telemetry ORDER BY "timestamp"`,
    );
    expect(homes.rows.map((r) => r.home)).toEqual([
      'telemetry_p202511',
      'telemetry_p202602',
      'telemetry_p202602',
    ]);
  });

  it('creates only the months that hold a row when the rows span more than ten years', async () => {
    const { months } = await planWith('plan_months_odd', [
      '1990-06-15 00:00:00',
      '2026-01-10 00:00:00',
      '2026-03-10 00:00:00',
    ]);
    expect(months.filter((p) => p < 'telemetry_p202604').sort()).toEqual([
      'telemetry_p199006',
      'telemetry_p202601',
      'telemetry_p202603',
    ]);
  });
});
