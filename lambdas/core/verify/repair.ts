import type { PoolClient } from 'pg';
import { ident } from '../db';
import { MAPPINGS, TABLE_ORDER, type MappedTable } from '../mapping';
import {
  insertFromStaging,
  insertTemplatesFromStaging,
  stagingColumns,
  streamWindow,
} from '../sync/window-copy';
import { bindWindow, loadWindows, qualified, type WindowRow } from '../windows';
import { checkWindows, V2_TENANT_FILTER, type VerifyDeps } from './checksums';
import { syncRow, type RepairDeps } from '../sync/repair';
import { buildReport, mismatchedWindows, type VerificationReport } from './report';
import { compareAgain } from './row-diff';
import { recordResults } from './runs';
import { describeError } from '../safe-error';

/** Telemetry rows rewritten per transaction by a window repair (see repairTelemetryWindow). */
export const REPAIR_ROWS_PER_TRANSACTION = 50;

/** What a window repair did: rows deleted from, and rows written to, the repaired side. */
export interface WindowRepairResult {
  deleted: number;
  written: number;
}

/**
 * Runs `repair` on one connection to V1 and one to V2 and releases both. When it fails, both
 * connections are rolled back before the error is thrown on; one whose ROLLBACK fails, or both
 * with `brokenOnError` (a COPY cut off half-way leaves its connection unusable), is released as
 * broken so that the pool never hands it out again.
 */
export async function withRepairConnections<T>(
  deps: Pick<VerifyDeps, 'v1' | 'v2'>,
  options: { brokenOnError: boolean },
  repair: (v1Client: PoolClient, v2Client: PoolClient) => Promise<T>,
): Promise<T> {
  const v1Client = await deps.v1.connect();
  const v2Client = await deps.v2.connect();
  let broken = false;
  try {
    return await repair(v1Client, v2Client);
  } catch (error) {
    for (const client of [v1Client, v2Client])
      await client.query('ROLLBACK').catch(() => {
        broken = true;
      });
    if (options.brokenOnError) broken = true;
    throw error;
  } finally {
    v1Client.release(broken);
    v2Client.release(broken);
  }
}

/**
 * Re-copies one window from V1: V2 rows of the window that V1 no longer has are removed, the
 * rest are written from V1 (overwriting V2), in one transaction (telemetry: only the rows that
 * differ, see repairTelemetryWindow).
 */
export async function repairWindow(deps: VerifyDeps, windowId: number): Promise<WindowRepairResult> {
  const [window] = await loadWindows(deps.v2, deps.config, [windowId]);
  if (window.table_name === 'telemetry') return repairTelemetryWindow(deps, window);
  return withRepairConnections(deps, { brokenOnError: false }, async (v1Client, v2Client) => {
    const { config } = deps;
    const table = window.table_name;
    const m = MAPPINGS[table];
    await v1Client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await v2Client.query('BEGIN');
    await v2Client.query(`CREATE TEMP TABLE stage (${stagingColumns(table)}) ON COMMIT DROP`);
    await streamWindow(v1Client, v2Client, config, window, 'pg_temp.stage');
    await v1Client.query('COMMIT');
    await v2Client.query(`SELECT set_config('migration.tenant_id', $1, true)`, [config.tenant.id]);
    const where = await bindWindow(v2Client, table, window, 'v2');
    const t = ident(m.v2Table);
    // Only the migrated tenant's rows: another tenant's rows in the window's range stay.
    const deleted = await v2Client.query<{ id: string }>(
      `DELETE FROM ${qualified(config.schemas.v2, m.v2Table)} WHERE ${where} AND ${V2_TENANT_FILTER}
          AND NOT EXISTS (SELECT 1 FROM pg_temp.stage s WHERE s.id = ${t}.id) RETURNING id::text AS id`,
    );
    if (table === 'devices') await v2Client.query(insertTemplatesFromStaging(config));
    const written = await v2Client.query(insertFromStaging(config, table, '', 'update'));
    await v2Client.query('COMMIT');
    await resyncRaced(
      deps,
      table,
      deleted.rows.map((r) => r.id),
    );
    return { deleted: deleted.rowCount ?? 0, written: written.rowCount ?? 0 };
  });
}

/** Rows a window repair re-syncs from V1 after it (see resyncRaced); a larger repair skips it. */
export const RESYNC_AFTER_REPAIR_MAX_ROWS = 1_000;

/**
 * A window repair writes V2 from a snapshot of V1, while the backend keeps dual-writing: a row
 * V1 committed after the snapshot, whose V2 half landed before the repair's delete, would be
 * deleted from V2 (and an update likewise overwritten with the older value). So every row the
 * repair deleted or rewrote is re-synced from V1 as V1 holds it now (syncRow: written when V1
 * has it, deleted when not), as the repair worker does. Skipped above
 * RESYNC_AFTER_REPAIR_MAX_ROWS rows: the window is checked again either way.
 */
async function resyncRaced(deps: VerifyDeps, table: MappedTable, ids: string[]): Promise<void> {
  const unique = [...new Set(ids)];
  if (unique.length === 0 || unique.length > RESYNC_AFTER_REPAIR_MAX_ROWS) return;
  const rowDeps = { v1: deps.v1, v2: deps.v2, schemas: deps.config.schemas, tenantId: deps.config.tenant.id };
  for (const id of unique) await syncRow(rowDeps, table, id);
}

/**
 * Telemetry's window repair touches only the rows that differ, each by its whole key (tenant,
 * device, time, legacy_id), at most REPAIR_ROWS_PER_TRANSACTION rows a transaction. On
 * TimescaleDB a change to a compressed chunk decompresses the batches its predicate cannot rule
 * out, and a transaction may decompress at most `timescaledb.max_tuples_decompressed_per_dml_transaction`
 * rows (100,000 by default): a window's time range alone spans a batch of every device, far
 * more than the window's rows. Finding the rows that differ is a read, which that limit does
 * not bound. The V1 rows are staged once, from one snapshot; each transaction is idempotent, so
 * a repair cut short is finished by the next one (the window is checked again either way).
 */
async function repairTelemetryWindow(deps: VerifyDeps, window: WindowRow): Promise<WindowRepairResult> {
  const { v1, v2, config } = deps;
  const target = qualified(config.schemas.v2, MAPPINGS.telemetry.v2Table);
  const columns = MAPPINGS.telemetry.columns.map((c) => ident(c.v2));
  const v1Client = await v1.connect();
  const v2Client = await v2.connect();
  let broken = false;
  try {
    await v2Client.query(`CREATE TEMP TABLE stage (${stagingColumns('telemetry')})`);
    await v1Client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await streamWindow(v1Client, v2Client, config, window, 'pg_temp.stage');
    await v1Client.query('COMMIT');
    await v2Client.query('ANALYZE pg_temp.stage');

    await v2Client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await v2Client.query(`SELECT set_config('migration.tenant_id', $1, true)`, [config.tenant.id]);
    const where = await bindWindow(v2Client, 'telemetry', window, 'v2');
    // The migrated tenant's rows only: another tenant's telemetry in this time range stays.
    const inV2 = `(SELECT ${columns.join(', ')} FROM ${target} WHERE ${where} AND legacy_id IS NOT NULL AND ${V2_TENANT_FILTER})`;
    // V2 rows of the window that V1 does not have as they are: under another key, or not at all.
    const extra = await v2Client.query<{ tenant: string; device: string; ts: string; legacy: string }>(
      `SELECT t.tenant_id AS tenant, t.device_id AS device, t."timestamp"::text AS ts, t.legacy_id::text AS legacy
         FROM ${inV2} t LEFT JOIN pg_temp.stage s ON s.legacy_id = t.legacy_id AND s."timestamp" = t."timestamp"
        WHERE s.legacy_id IS NULL`,
    );
    // V1 rows V2 lacks or holds with other values.
    const differing = await v2Client.query<{ ts: string; legacy: string }>(
      `SELECT s."timestamp"::text AS ts, s.legacy_id::text AS legacy
         FROM pg_temp.stage s LEFT JOIN ${inV2} t ON t.legacy_id = s.legacy_id AND t."timestamp" = s."timestamp"
        WHERE t.legacy_id IS NULL
           OR (${columns.map((c) => `s.${c}`).join(', ')}) IS DISTINCT FROM (${columns.map((c) => `t.${c}`).join(', ')})`,
    );
    await v2Client.query('COMMIT');

    let deleted = 0;
    let written = 0;
    const n = REPAIR_ROWS_PER_TRANSACTION;
    for (let i = 0; i < Math.max(extra.rows.length, differing.rows.length); i += n) {
      const gone = extra.rows.slice(i, i + n);
      const write = differing.rows.slice(i, i + n);
      await v2Client.query('BEGIN');
      if (gone.length > 0) {
        const result = await v2Client.query(
          `DELETE FROM ${target}
            WHERE tenant_id = ANY($1::text[]) AND device_id = ANY($2::text[]) AND "timestamp" = ANY($3::timestamptz[])
              AND legacy_id = ANY($4::bigint[])
              AND (legacy_id, "timestamp") IN (SELECT * FROM unnest($4::bigint[], $3::timestamptz[]))`,
          [
            gone.map((r) => r.tenant),
            gone.map((r) => r.device),
            gone.map((r) => r.ts),
            gone.map((r) => r.legacy),
          ],
        );
        deleted += result.rowCount ?? 0;
      }
      if (write.length > 0) {
        const result = await v2Client.query(
          insertFromStaging(
            config,
            'telemetry',
            `(s.legacy_id, s."timestamp") IN (SELECT * FROM unnest($1::bigint[], $2::timestamptz[]))`,
            'update',
          ),
          [write.map((r) => r.legacy), write.map((r) => r.ts)],
        );
        written += result.rowCount ?? 0;
      }
      await v2Client.query('COMMIT');
    }
    await resyncRaced(deps, 'telemetry', [
      ...extra.rows.map((r) => r.legacy),
      ...differing.rows.map((r) => r.legacy),
    ]);
    return { deleted, written };
  } catch (error) {
    await v1Client.query('ROLLBACK').catch(() => undefined);
    await v2Client.query('ROLLBACK').catch(() => {
      broken = true;
    });
    throw error;
  } finally {
    await v2Client.query('DROP TABLE IF EXISTS pg_temp.stage').catch(() => {
      broken = true;
    });
    v1Client.release();
    v2Client.release(broken);
  }
}

/** Which way a repair writes: the window repair, the row re-sync, and their order. */
export interface RepairDirection {
  repairWindow(deps: VerifyDeps, windowId: number): Promise<unknown>;
  syncRow(deps: RepairDeps, table: MappedTable, id: string): Promise<unknown>;
  /** Windows and sampled rows parents first (V1's foreign keys need them, writing V2 → V1). */
  parentsFirst?: boolean;
}

const tableOrder = (t: MappedTable) => TABLE_ORDER.indexOf(t);

/**
 * Repairs what a report found: every mismatched window is re-copied from V1 and checked again,
 * up to `maxAttempts` times; every differing sampled row is re-synced from V1 through the
 * mapping and compared again. Returns the report with the repairs; what still differs fails it.
 */
export function repairRun(
  deps: VerifyDeps,
  found: VerificationReport,
  options: { maxAttempts?: number } = {},
): Promise<VerificationReport> {
  return repairFindings(deps, found, { repairWindow, syncRow }, options);
}

/**
 * The repair loop of both directions: each mismatched window repaired and checked again, up to
 * `maxAttempts` times; each differing sampled row re-synced and compared again.
 */
export async function repairFindings(
  deps: VerifyDeps,
  found: VerificationReport,
  direction: RepairDirection,
  options: { maxAttempts?: number } = {},
): Promise<VerificationReport> {
  const runId = found.runId;
  const repaired: VerificationReport['repaired'] = [];
  const windows = await mismatchedWindows(deps, runId);
  if (direction.parentsFirst) {
    windows.sort((a, b) => tableOrder(a.table_name) - tableOrder(b.table_name) || a.seq - b.seq);
  }
  for (const window of windows) {
    let clean = false;
    let attempts = 0;
    let lastError: string | undefined;
    while (!clean && attempts < (options.maxAttempts ?? 3)) {
      attempts++;
      try {
        await direction.repairWindow(deps, window.id);
      } catch (error) {
        // A repair that cannot write leaves the window mismatched; it is named below.
        lastError = describeError(error);
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
  const rows = direction.parentsFirst
    ? [...found.sample.differences].sort((a, b) => tableOrder(a.table) - tableOrder(b.table))
    : found.sample.differences;
  for (const d of rows) {
    try {
      await direction.syncRow(rowDeps, d.table, d.key);
    } catch (error) {
      errors.set(`${d.table} ${d.key}`, describeError(error));
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
