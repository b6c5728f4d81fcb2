import { ident } from '../db';
import { MAPPINGS } from '../mapping';
import {
  insertFromStaging,
  insertTemplatesFromStaging,
  stagingColumns,
  streamWindow,
} from '../sync/window-copy';
import { bindWindow, loadWindows, qualified } from '../windows';
import { checkWindows, type VerifyDeps } from './checksums';
import { syncRow } from '../sync/repair';
import { buildReport, mismatchedWindows, type VerificationReport } from './report';
import { compareAgain } from './row-diff';
import { recordResults } from './runs';

/**
 * Re-copies one window from V1: V2 rows of the window that V1 no longer has are removed, the
 * rest are written from V1 (overwriting V2), in one transaction.
 */
export async function repairWindow(
  deps: VerifyDeps,
  windowId: number,
): Promise<{ deleted: number; written: number }> {
  const [window] = await loadWindows(deps.v2, deps.config, [windowId]);
  const { v1, v2, config } = deps;
  const table = window.table_name;
  const m = MAPPINGS[table];
  const v1Client = await v1.connect();
  const v2Client = await v2.connect();
  try {
    await v1Client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await v2Client.query('BEGIN');
    await v2Client.query(`CREATE TEMP TABLE stage (${stagingColumns(table)}) ON COMMIT DROP`);
    await streamWindow(v1Client, v2Client, config, window, 'pg_temp.stage');
    await v1Client.query('COMMIT');
    await v2Client.query(`SELECT set_config('migration.tenant_id', $1, true)`, [config.tenant.id]);
    const where = await bindWindow(v2Client, table, window, 'v2');
    const t = ident(m.v2Table);
    const keyMatch =
      table === 'telemetry'
        ? `s.legacy_id = ${t}.legacy_id AND s."timestamp" = ${t}."timestamp"`
        : `s.id = ${t}.id`;
    const deleted = await v2Client.query(
      `DELETE FROM ${qualified(config.schemas.v2, m.v2Table)} WHERE ${where}
          ${table === 'telemetry' ? 'AND legacy_id IS NOT NULL' : ''}
          AND NOT EXISTS (SELECT 1 FROM pg_temp.stage s WHERE ${keyMatch})`,
    );
    if (table === 'devices') await v2Client.query(insertTemplatesFromStaging(config));
    const written = await v2Client.query(insertFromStaging(config, table, '', 'update'));
    await v2Client.query('COMMIT');
    return { deleted: deleted.rowCount ?? 0, written: written.rowCount ?? 0 };
  } catch (error) {
    await v1Client.query('ROLLBACK').catch(() => undefined);
    await v2Client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    v1Client.release();
    v2Client.release();
  }
}

/**
 * Repairs what a report found: every mismatched window is re-copied from V1 and checked again,
 * up to `maxAttempts` times; every differing sampled row is re-synced from V1 through the
 * mapping and compared again. Returns the report with the repairs; what still differs fails it.
 */
export async function repairRun(
  deps: VerifyDeps,
  found: VerificationReport,
  options: { maxAttempts?: number } = {},
): Promise<VerificationReport> {
  const runId = found.runId;
  const repaired: VerificationReport['repaired'] = [];
  for (const window of await mismatchedWindows(deps, runId)) {
    let clean = false;
    let attempts = 0;
    let lastError: string | undefined;
    while (!clean && attempts < (options.maxAttempts ?? 3)) {
      attempts++;
      try {
        await repairWindow(deps, window.id);
      } catch (error) {
        // A repair that cannot write leaves the window mismatched; it is named below.
        lastError = `${(error as Error).name}: ${(error as Error).message}`;
      }
      const { windows: results } = await checkWindows(deps, [window.id]);
      await recordResults(deps.v2, deps.config, runId, results, attempts);
      clean = results[0].matched;
    }
    repaired.push({
      windowId: window.id,
      table: window.table_name,
      attempts,
      clean,
      ...(lastError && !clean ? { error: lastError } : {}),
    });
  }
  const rowDeps = { v1: deps.v1, v2: deps.v2, schemas: deps.config.schemas, tenantId: deps.config.tenant.id };
  const errors = new Map<string, string>();
  for (const d of found.sample.differences) {
    try {
      await syncRow(rowDeps, d.table, d.key);
    } catch (error) {
      errors.set(`${d.table} ${d.key}`, `${(error as Error).name}: ${(error as Error).message}`);
    }
  }
  const remaining = await compareAgain(deps, found.sample.differences);
  const still = new Set(remaining.map((d) => `${d.table} ${d.key}`));
  const repairedRows = found.sample.differences.map((d) => {
    const error = errors.get(`${d.table} ${d.key}`);
    return {
      table: d.table,
      key: d.key,
      clean: !still.has(`${d.table} ${d.key}`),
      ...(error ? { error } : {}),
    };
  });
  const report = await buildReport(deps, runId);
  return {
    ...report,
    clean: report.mismatches.length === 0 && remaining.length === 0,
    sample: { checked: found.sample.checked, differences: remaining },
    repaired,
    repairedRows,
    ...(found.recheck ? { recheck: found.recheck } : {}),
  };
}
