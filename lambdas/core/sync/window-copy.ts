import { pipeline } from 'node:stream/promises';
import type { PoolClient } from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import type { MigrationConfig } from '../config';
import { ident } from '../db';
import {
  EXTRA_V1_COLUMNS,
  MAPPINGS,
  TEMPLATE_ID_SQL,
  v1Projection,
  v2Columns,
  type ColumnMapping,
  type MappedTable,
} from '../mapping';
import { bindWindow, qualified, type WindowRow } from '../windows';

/**
 * The building blocks that copy a window's rows V1 → V2 under the mapping: the backfill's copy
 * (lambdas/core/backfill/copy.ts) and Phase 3's window repair (lambdas/core/verify/repair.ts)
 * are both made of them.
 */

/** Streams the window's mapped V1 rows into `target` on V2 with COPY; returns the row count. */
export async function streamWindow(
  v1Client: PoolClient,
  v2Client: PoolClient,
  config: MigrationConfig,
  window: WindowRow,
  target: string,
): Promise<number> {
  const m = MAPPINGS[window.table_name];
  // COPY's text form of an instant follows the session's DateStyle and TimeZone: both sides use
  // the same ones whatever their servers' defaults, so every value reads back as it was written.
  for (const client of [v1Client, v2Client])
    await client.query(
      `SELECT set_config('DateStyle', 'ISO, YMD', true), set_config('TimeZone', 'UTC', true)`,
    );
  await v1Client.query(`SELECT set_config('migration.tenant_id', $1, true)`, [config.tenant.id]);
  const where = await bindWindow(v1Client, window.table_name, window, 'v1');
  // For telemetry, reading each device's slice through the ("deviceId", "timestamp") index
  // keeps a window's cost proportional to its size instead of a scan of the whole table.
  const viaDevices =
    window.table_name === 'telemetry'
      ? ` AND "deviceId" IN (SELECT id FROM ${qualified(config.schemas.v1, 'devices')})`
      : '';
  const source = copyTo(
    `COPY (SELECT ${v1Projection(window.table_name)} FROM ${qualified(config.schemas.v1, m.v1Table)} WHERE ${where}${viaDevices}) TO STDOUT`,
  );
  const sink = copyFrom(`COPY ${target} (${v2Columns(window.table_name).map(ident).join(', ')}) FROM STDIN`);
  const reading = v1Client.query(source);
  const writing = v2Client.query(sink);
  await pipeline(reading, writing);
  return Number(writing.rowCount ?? 0);
}

const STAGING_TYPES: Record<ColumnMapping['kind'], string> = {
  text: 'text',
  json: 'jsonb',
  instant: 'timestamptz',
  bigint: 'bigint',
};

/** Column definitions of a staging table for a mapped table (V2 types from the mapping, plus extras). */
export function stagingColumns(table: MappedTable): string {
  return [
    ...MAPPINGS[table].columns.map((c) => `${ident(c.v2)} ${STAGING_TYPES[c.kind]}`),
    ...(EXTRA_V1_COLUMNS[table] ?? []).map((c) => `${ident(c.name)} text`),
  ].join(', ');
}

/**
 * INSERT … SELECT from staging into the V2 table. The backfill keeps a row V2 already has
 * (`nothing`: a dual write is newer than the backfill's read); repair overwrites it with V1
 * (`update`: V1 is the source of truth), but only a row of the same tenant: another tenant's
 * row under the same key is left as it is (and the window stays mismatched, named).
 */
export function insertFromStaging(
  config: MigrationConfig,
  table: MappedTable,
  extraWhere = '',
  onConflict: 'nothing' | 'update' = 'nothing',
): string {
  const m = MAPPINGS[table];
  const target = qualified(config.schemas.v2, m.v2Table);
  const cols = m.columns.map((c) => ident(c.v2));
  const written = table === 'devices' ? [...cols, 'template_id'] : cols;
  const keyColumns = new Set(m.conflict.replace(/[()"\s]/g, '').split(','));
  const action =
    onConflict === 'nothing'
      ? 'DO NOTHING'
      : `DO UPDATE SET ${written
          .filter((c) => !keyColumns.has(c.replace(/"/g, '')))
          .map((c) => `${c} = EXCLUDED.${c}`)
          .join(', ')} WHERE ${target}.tenant_id = EXCLUDED.tenant_id`;
  const where = extraWhere ? `WHERE ${extraWhere}` : '';
  if (table === 'devices') {
    return `INSERT INTO ${target} (${written.join(', ')})
            SELECT ${cols.map((c) => `s.${c}`).join(', ')}, t.id FROM pg_temp.stage s
              JOIN ${qualified(config.schemas.v2, 'device_templates')} t ON t.tenant_id = s.tenant_id AND t.device_type = s.type
             ${where}
            ON CONFLICT ${m.conflict} ${action}`;
  }
  return `INSERT INTO ${target} (${cols.join(', ')}) SELECT ${cols.join(', ')} FROM pg_temp.stage s
           ${where} ON CONFLICT ${m.conflict} ${action}`;
}

/** Creates the default template of every device type in the staged devices (once per tenant and type). */
export function insertTemplatesFromStaging(config: MigrationConfig): string {
  return `INSERT INTO ${qualified(config.schemas.v2, 'device_templates')} (id, tenant_id, device_type, name, description)
          SELECT DISTINCT ${TEMPLATE_ID_SQL('s.tenant_id', 's.type')}, s.tenant_id, s.type, s.type, 'Default template created by the V1 migration'
            FROM pg_temp.stage s
          ON CONFLICT DO NOTHING`;
}
