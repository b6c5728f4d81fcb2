import type { Pool } from 'pg';
import type { MigrationConfig } from '../config';
import { controlSchema } from '../db';
import type { MappedTable } from '../mapping';
import type { WindowRow } from '../windows';
import type { VerifyDeps } from './checksums';
import { explainWindow, sampleCompare, type RowDifference, type WindowMismatch } from './row-diff';

export interface VerificationReport {
  runId: number;
  scope: 'full' | 'incremental';
  clean: boolean;
  checkedAt: string;
  tables: Record<string, { windows: number; mismatched: number; v1Rows: number; v2Rows: number }>;
  mismatches: WindowMismatch[];
  sample: { checked: number; differences: (RowDifference & { table: MappedTable })[] };
  repaired: { windowId: number; table: string; attempts: number; clean: boolean; error?: string }[];
  /** Sampled rows that differed and were re-synced from V1, and whether each then agreed. */
  repairedRows?: { table: MappedTable; key: string; clean: boolean; error?: string }[];
  /**
   * Mismatches compared again after a delay, as writes may have been in flight: how many
   * windows and rows needed it, and how many then agreed.
   */
  recheck?: { delayMs: number; windows: number; windowsSettled: number; rows: number; rowsSettled: number };
}

export interface TableTotals {
  windows: number;
  mismatched: number;
  v1Rows: number;
  v2Rows: number;
  /** The sums of the digests on each side, modulo 2^64, as decimal text. */
  v1Checksum: string;
  v2Checksum: string;
}

/**
 * Per table, a run's windows checked and mismatched and its rows and checksums on each side:
 * the windows counted on their own, plus the totals of the slices whose windows were not.
 */
export async function runTotals(
  v2: Pool,
  config: MigrationConfig,
  runId: number,
): Promise<Record<string, TableTotals>> {
  const ctl = controlSchema(config);
  const { rows } = await v2.query<{
    table_name: string;
    windows: number;
    bad: number;
    a: string | null;
    b: string | null;
    ca: string | null;
    cb: string | null;
  }>(
    `SELECT table_name, sum(windows)::int AS windows, sum(bad)::int AS bad, sum(a) AS a, sum(b) AS b,
            (sum(ca) % 18446744073709551616)::text AS ca, (sum(cb) % 18446744073709551616)::text AS cb
       FROM (SELECT w.table_name, 1 AS windows, (NOT v.matched)::int AS bad, v.v1_rows AS a, v.v2_rows AS b,
                    v.v1_checksum AS ca, v.v2_checksum AS cb
               FROM ${ctl}.verification_windows v JOIN ${ctl}.windows w ON w.id = v.window_id
              WHERE v.run_id = $1
             UNION ALL
             SELECT s.table_name, 0, 0, s.v1_rows, s.v2_rows, s.v1_checksum, s.v2_checksum
               FROM ${ctl}.verification_slices s
              WHERE s.run_id = $1 AND s.matched
                -- Only slices whose windows have no counts of their own (a one-window slice's
                -- window has its counts, which are the slice's).
                AND NOT EXISTS (SELECT 1 FROM ${ctl}.verification_windows v
                                 WHERE v.run_id = s.run_id AND v.window_id = ANY (s.window_ids)
                                   AND v.v1_rows IS NOT NULL)) t
      GROUP BY table_name`,
    [runId],
  );
  return Object.fromEntries(
    rows.map((r) => [
      r.table_name,
      {
        windows: r.windows,
        mismatched: r.bad,
        v1Rows: Number(r.a ?? 0),
        v2Rows: Number(r.b ?? 0),
        v1Checksum: r.ca ?? '0',
        v2Checksum: r.cb ?? '0',
      },
    ]),
  );
}

export async function mismatchedWindows(deps: VerifyDeps, runId: number): Promise<WindowRow[]> {
  const { rows } = await deps.v2.query<WindowRow>(
    `SELECT w.id::int AS id, w.table_name, w.seq, w.lower_bound, w.upper_bound, w.expected_rows::int AS expected_rows, w.status, w.attempts
       FROM ${controlSchema(deps.config)}.verification_windows v JOIN ${controlSchema(deps.config)}.windows w ON w.id = v.window_id
      WHERE v.run_id = $1 AND NOT v.matched ORDER BY w.table_name, w.seq`,
    [runId],
  );
  return rows;
}

/** Builds the run's report from the recorded results: every mismatched table and window, named. */
export async function buildReport(
  deps: VerifyDeps,
  runId: number,
  options: { sampleSize?: number } = {},
): Promise<VerificationReport> {
  const ctl = controlSchema(deps.config);
  const run = await deps.v2.query<{ scope: 'full' | 'incremental' }>(
    `SELECT scope FROM ${ctl}.verification_runs WHERE id = $1`,
    [runId],
  );
  const tables: VerificationReport['tables'] = {};
  for (const [name, t] of Object.entries(await runTotals(deps.v2, deps.config, runId)))
    tables[name] = { windows: t.windows, mismatched: t.mismatched, v1Rows: t.v1Rows, v2Rows: t.v2Rows };
  const mismatches: WindowMismatch[] = [];
  for (const window of await mismatchedWindows(deps, runId))
    mismatches.push(await explainWindow(deps, window));
  const sample = options.sampleSize
    ? await sampleCompare(deps, options.sampleSize, Object.keys(tables) as MappedTable[])
    : { checked: 0, differences: [] };
  return {
    runId,
    scope: run.rows[0]?.scope ?? 'full',
    clean: mismatches.length === 0 && sample.differences.length === 0,
    checkedAt: new Date().toISOString(),
    tables,
    mismatches,
    sample,
    repaired: [],
  };
}

/** Records a run's outcome and report. */
export async function finishVerification(deps: VerifyDeps, report: VerificationReport): Promise<void> {
  await deps.v2.query(
    `UPDATE ${controlSchema(deps.config)}.verification_runs SET status = $2, finished_at = now(), report = $3 WHERE id = $1`,
    [report.runId, report.clean ? 'passed' : 'failed', JSON.stringify(report)],
  );
}
