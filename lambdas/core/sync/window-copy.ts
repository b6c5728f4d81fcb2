import { pipeline } from 'node:stream/promises';
import type { PoolClient } from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import type { MigrationConfig } from '../config';
import { ident } from '../db';
import {
  EXTRA_V1_COLUMNS,
  MAPPINGS,
  TEMPLATE_ID_SQL,
  v1ProjectionList,
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

/**
 * Working memory of the V1 session that sorts a telemetry window into key order: a window of the
 * default 50,000 rows sorts in memory, without temporary files.
 */
export const SORT_WORK_MEM = '64MB';

/**
 * The SELECT list of a window's mapped V1 rows, each column cast to the type V2 (and staging)
 * store it as, so COPY's binary form of each value is the one V2 reads.
 */
function typedProjection(table: MappedTable): string {
  const types = [
    ...MAPPINGS[table].columns.map((c) => STAGING_TYPES[c.kind]),
    ...(EXTRA_V1_COLUMNS[table] ?? []).map(() => 'text'),
  ];
  return v1ProjectionList(table)
    .map((expr, i) => `(${expr})::${types[i]}`)
    .join(', ');
}

/**
 * Streams the window's mapped V1 rows into `target` on V2 with COPY; returns the row count.
 * Telemetry rows go in key order (`"timestamp"`, id), so V2's unique key on
 * (`legacy_id`, `"timestamp"`) and its primary key take them mostly at their right edge.
 * Where both servers store text in the same encoding, COPY's binary format carries the values
 * (no timestamp, number or text formatting and parsing on the way); otherwise its text format.
 */
export async function streamWindow(
  v1Client: PoolClient,
  v2Client: PoolClient,
  config: MigrationConfig,
  window: WindowRow,
  target: string,
): Promise<number> {
  const m = MAPPINGS[window.table_name];
  const telemetry = window.table_name === 'telemetry';
  // COPY's text form of an instant follows the session's DateStyle and TimeZone: both sides use
  // the same ones whatever their servers' defaults, so every value reads back as it was written.
  const [v1Session, v2Session] = await Promise.all(
    [v1Client, v2Client].map((client) =>
      client.query<{ encoding: string }>(
        `SELECT set_config('DateStyle', 'ISO, YMD', true), set_config('TimeZone', 'UTC', true),
                current_setting('server_encoding') AS encoding`,
      ),
    ),
  );
  // Binary COPY passes text bytes as they are stored: only between equal encodings.
  const binary = v1Session.rows[0].encoding === v2Session.rows[0].encoding;
  // No JIT compilation: a window's read runs for a fraction of a second, and on a large V1 its
  // plan's estimated cost passes jit_above_cost, so each window compiled its expressions anew
  // (10-60 ms of a 65-150 ms read at 10M rows, none at 1M).
  await v1Client.query(
    `SELECT set_config('migration.tenant_id', $1, true), set_config('work_mem', $2, true), set_config('jit', 'off', true)`,
    [config.tenant.id, SORT_WORK_MEM],
  );
  const where = await bindWindow(v1Client, window.table_name, window, 'v1');
  const viaDevices = telemetry ? ` AND ${deviceSlices(config)} ORDER BY "timestamp", id` : '';
  const format = binary ? ' (FORMAT binary)' : '';
  const source = copyTo(
    `COPY (SELECT ${typedProjection(window.table_name)} FROM ${qualified(config.schemas.v1, m.v1Table)} WHERE ${where}${viaDevices}) TO STDOUT${format}`,
  );
  const sink = copyFrom(
    `COPY ${target} (${v2Columns(window.table_name).map(ident).join(', ')}) FROM STDIN${format}`,
  );
  const reading = v1Client.query(source);
  const writing = v2Client.query(sink);
  await pipeline(reading, writing);
  return Number(writing.rowCount ?? 0);
}

/**
 * The condition that reads a telemetry window through each device's slice of V1's
 * ("deviceId", "timestamp") index (V1 has no index led by time), keeping a window's cost
 * proportional to its size instead of a scan of the whole table. The device ids come as one
 * array (every V1 row has its device: a foreign key), so PostgreSQL collects the window's rows of
 * all devices in one bitmap and reads each heap page once, in order: at 10M rows a 50,000-row
 * window took 65-70 ms this way against 85-93 ms through one index scan per device (the plan of
 * `IN (SELECT id FROM devices)`, which visited a heap page for every row).
 */
export function deviceSlices(config: MigrationConfig): string {
  return `"deviceId" = ANY ((SELECT array_agg(id) FROM ${qualified(config.schemas.v1, 'devices')})::text[])`;
}

/**
 * The V1 devices that own at least one row of a telemetry window, read in the V1 session's
 * snapshot (the one the window's COPY reads): one index probe per device, each stopping at its
 * first row in the window.
 */
export async function telemetryWindowDevices(
  v1Client: PoolClient,
  config: MigrationConfig,
  window: WindowRow,
): Promise<string[]> {
  const where = await bindWindow(v1Client, 'telemetry', window, 'v1');
  const { rows } = await v1Client.query<{ id: string }>(
    `SELECT d.id FROM ${qualified(config.schemas.v1, 'devices')} d
       CROSS JOIN LATERAL (SELECT 1 FROM ${qualified(config.schemas.v1, 'device_data')}
                            WHERE "deviceId" = d.id AND ${where} LIMIT 1) AS present`,
  );
  return rows.map((r) => r.id);
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
