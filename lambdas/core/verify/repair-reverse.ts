import { pipeline } from 'node:stream/promises';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { ident } from '../db';
import { MAPPINGS } from '../mapping';
import { INVERSE_MAPPINGS, v2SourceColumns } from '../mapping-inverse';
import { syncRowToV1, v1UpsertSql } from '../sync/reverse';
import { bindWindow, loadWindows, qualified } from '../windows';
import type { VerifyDeps } from './checksums';
import { repairFindings, withRepairConnections, type WindowRepairResult } from './repair';
import type { VerificationReport } from './report';

/**
 * Repair with V2 as the truth, for the time V2 is the write primary: a window's rows are copied
 * V2 → V1 under the inverse mapping (mapping-inverse.ts) in SQL, and sampled rows are re-synced
 * V2 → V1 (`syncRowToV1`). The mirror image of repair.ts.
 */

/**
 * Re-copies one window from V2 into V1, in one V1 transaction over one V2 snapshot: V2's rows of
 * the tenant in the window are streamed with COPY (their V2 source columns) into a V1 staging
 * table, V1's rows of the window that V2 does not hold are deleted, and the rest are upserted
 * through the inverse mapping (rows already equal under the mapping are left as they are).
 */
export async function repairWindowFromV2(deps: VerifyDeps, windowId: number): Promise<WindowRepairResult> {
  const [window] = await loadWindows(deps.v2, deps.config, [windowId]);
  const { config } = deps;
  const table = window.table_name;
  const inverse = INVERSE_MAPPINGS[table];
  // A COPY cut off half-way leaves its connection unusable: a failed repair releases both as broken.
  return withRepairConnections(deps, { brokenOnError: true }, async (v1Client, v2Client) => {
    await v2Client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await v1Client.query('BEGIN');
    // COPY's text form of an instant follows DateStyle: both sides use the same one.
    for (const client of [v1Client, v2Client])
      await client.query(
        `SELECT set_config('DateStyle', 'ISO, YMD', true), set_config('TimeZone', 'UTC', true)`,
      );
    await v2Client.query(`SELECT set_config('migration.tenant_id', $1, true)`, [config.tenant.id]);
    const inV2 = await bindWindow(v2Client, table, window, 'v2');
    const withKey = table === 'telemetry' ? ' AND legacy_id IS NOT NULL' : '';
    await v1Client.query(
      `CREATE TEMP TABLE stage_v2 (${inverse.source.map((c) => `${ident(c.name)} ${c.type}`).join(', ')}) ON COMMIT DROP`,
    );
    const source = copyTo(
      `COPY (SELECT ${v2SourceColumns(table, config.schemas.v2)} FROM ${qualified(config.schemas.v2, MAPPINGS[table].v2Table)} v2row
              WHERE ${inV2} AND tenant_id = current_setting('migration.tenant_id')${withKey}) TO STDOUT`,
    );
    const sink = copyFrom(
      `COPY pg_temp.stage_v2 (${inverse.source.map((c) => ident(c.name)).join(', ')}) FROM STDIN`,
    );
    await pipeline(v2Client.query(source), v1Client.query(sink));
    await v2Client.query('COMMIT');
    const inV1 = await bindWindow(v1Client, table, window, 'v1');
    const deleted = await v1Client.query(
      `DELETE FROM ${qualified(config.schemas.v1, MAPPINGS[table].v1Table)} v1row WHERE ${inV1}
          AND NOT EXISTS (SELECT 1 FROM pg_temp.stage_v2 s WHERE s.${ident(inverse.key)} = v1row.id)`,
    );
    const written = await v1Client.query(v1UpsertSql(table, config.schemas.v1, 'pg_temp.stage_v2'));
    await v1Client.query('COMMIT');
    return { deleted: deleted.rowCount ?? 0, written: written.rowCount ?? 0 };
  });
}

/**
 * Repairs what a report found, V2 the truth: every mismatched window is re-copied V2 → V1
 * (parents first) and checked again, up to `maxAttempts` times; every differing sampled row is
 * re-synced V2 → V1 and compared again. Returns the report with the repairs.
 */
export function repairRunFromV2(
  deps: VerifyDeps,
  found: VerificationReport,
  options: { maxAttempts?: number } = {},
): Promise<VerificationReport> {
  return repairFindings(
    deps,
    found,
    { repairWindow: repairWindowFromV2, syncRow: syncRowToV1, parentsFirst: true },
    options,
  );
}
