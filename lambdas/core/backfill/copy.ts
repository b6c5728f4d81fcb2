import type { Pool, PoolClient } from 'pg';
import type { MigrationConfig } from '../config';
import { controlSchema, ident, isConnectionFailure, isTransient } from '../db';
import {
  MigrationError,
  ParentRowsMissingError,
  TransientDatabaseError,
  UnmappableRowError,
  WindowCopyError,
} from '../errors';
import { MAPPINGS, type MappedTable } from '../mapping';
import {
  insertFromStaging,
  insertTemplatesFromStaging,
  stagingColumns,
  streamWindow,
  telemetryWindowDevices,
} from '../sync/window-copy';
import { loadWindow, qualified, type WindowRow } from '../windows';
import { safeMessage } from '../safe-error';

export interface BackfillDeps {
  v1: Pool;
  v2: Pool;
  config: MigrationConfig;
}

export interface CopyResult {
  windowId: number;
  table: MappedTable;
  rowsCopied: number;
  rowsInserted: number;
  path: 'fast' | 'staging' | 'skipped';
  /**
   * How the copied rows' foreign keys were checked: once for the window (telemetry's COPY, see
   * checkTelemetryParents), or row by row by PostgreSQL.
   */
  foreignKeys?: 'window' | 'row';
}

const sqlState = (e: unknown) => (e as { code?: string }).code ?? '';

/**
 * Finds the first staged row that V2 refuses, with one savepoint per row, to name it. Only
 * runs after a bulk insert failed on data, so its cost is paid on the failure path alone.
 */
async function findUnmappableRow(
  v2Client: PoolClient,
  config: MigrationConfig,
  window: WindowRow,
  bulkError: unknown,
): Promise<never> {
  const m = MAPPINGS[window.table_name];
  const keyColumn = window.table_name === 'telemetry' ? 'legacy_id' : 'id';
  await v2Client.query('ROLLBACK TO SAVEPOINT before_insert');
  const rows = await v2Client.query<{ tid: string; key: string }>(
    `SELECT ctid::text AS tid, ${keyColumn}::text AS key FROM pg_temp.stage`,
  );
  for (const row of rows.rows) {
    await v2Client.query('SAVEPOINT one_row');
    try {
      await v2Client.query(insertFromStaging(config, window.table_name, `s.ctid = $1::tid`), [row.tid]);
      await v2Client.query('RELEASE SAVEPOINT one_row');
    } catch (error) {
      throw new UnmappableRowError(m.v1Table, window.id, `${m.v1Table}.id=${row.key}`, safeMessage(error), {
        cause: error,
      });
    }
  }
  throw new UnmappableRowError(m.v1Table, window.id, '(unknown)', safeMessage(bulkError), {
    cause: bulkError,
  });
}

/** V2 pools whose role may not set `session_replication_role` (asked once per pool). */
const rowTriggersRequired = new WeakSet<Pool>();

/**
 * Turns off, in the V2 transaction only (copyWindow turns them on again after its COPY), the
 * per-row triggers that check V2 telemetry's foreign keys (`session_replication_role = replica`, which needs a superuser, RDS's
 * master user, or `GRANT SET ON PARAMETER session_replication_role`). Returns false, changing
 * nothing, where the role may not, or where telemetry (or one of its partitions or chunks) has
 * a trigger of its own, which must keep firing.
 */
async function skipRowTriggers(v2Client: PoolClient, v2: Pool, config: MigrationConfig): Promise<boolean> {
  if (rowTriggersRequired.has(v2)) return false;
  const own = await v2Client.query(
    `SELECT 1 FROM pg_catalog.pg_trigger
      WHERE NOT tgisinternal
        AND (tgrelid = $1::regclass OR tgrelid IN (SELECT inhrelid FROM pg_catalog.pg_inherits WHERE inhparent = $1::regclass))
      LIMIT 1`,
    [`${ident(config.schemas.v2)}.telemetry`],
  );
  if (own.rows.length > 0) return false;
  await v2Client.query('SAVEPOINT replica_role');
  try {
    await v2Client.query(`SELECT set_config('session_replication_role', 'replica', true)`);
    await v2Client.query('RELEASE SAVEPOINT replica_role');
    return true;
  } catch (error) {
    if (sqlState(error) !== '42501') throw error;
    await v2Client.query('ROLLBACK TO SAVEPOINT replica_role');
    rowTriggersRequired.add(v2);
    return false;
  }
}

/**
 * Telemetry's foreign keys (tenant, device), checked once per window instead of once per row
 * (the per-row checks skipped by skipRowTriggers, about half the CPU time of a window's COPY),
 * after the window's COPY and before its commit: the tenant and every device that owns a row of
 * the window (read from V1 in the snapshot the COPY read) must be in V2, and are locked
 * `FOR KEY SHARE` until the window commits, the lock PostgreSQL's own check takes per row. A
 * device deleted meanwhile has either gone (or is going: the lock waits for its deletion to
 * commit) and the window fails with ParentRowsMissingError and is retried, or its deletion waits
 * for the window and its cascade then removes the window's rows too. No V2 row is ever left
 * without its device. Checking after the COPY, not before, means the window holds no device lock
 * while it copies: a hypertable chunk the COPY creates (which locks `devices` to add its foreign
 * keys) cannot deadlock with a device deletion waiting on such a lock.
 */
async function checkTelemetryParents(
  v1Client: PoolClient,
  v2Client: PoolClient,
  config: MigrationConfig,
  window: WindowRow,
): Promise<void> {
  const tenant = await v2Client.query(
    `SELECT id FROM ${qualified(config.schemas.v2, 'tenants')} WHERE id = $1 FOR KEY SHARE`,
    [config.tenant.id],
  );
  if (tenant.rows.length === 0)
    throw new ParentRowsMissingError('telemetry', window.id, `tenant ${config.tenant.id} is not in V2`);
  const devices = await telemetryWindowDevices(v1Client, config, window);
  const found = await v2Client.query<{ id: string }>(
    `SELECT id FROM ${qualified(config.schemas.v2, 'devices')} WHERE id = ANY($1::text[]) FOR KEY SHARE`,
    [devices],
  );
  if (found.rows.length !== devices.length) {
    const present = new Set(found.rows.map((r) => r.id));
    const missing = devices.filter((d) => !present.has(d));
    throw new ParentRowsMissingError(
      'telemetry',
      window.id,
      `${missing.length} device(s) not in V2: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', …' : ''}`,
    );
  }
}

/**
 * Copies one window V1 → V2 with the mapping, in one V2 transaction that also marks the window
 * done with its row count. Safe to run twice, or twice at once: rows already in V2 (an earlier
 * copy, or a newer dual write) are kept as they are, never duplicated or overwritten.
 * Telemetry first tries a straight COPY into the table; if any row of the window is already
 * there the unique key refuses it, and the window goes through a staging table and
 * `INSERT … ON CONFLICT DO NOTHING` instead. A lock timeout (55P03) or a lost session fails as
 * TransientDatabaseError, which the worker tries again within the delivery (copyRidingOutFaults).
 */
export async function copyWindow(
  deps: BackfillDeps,
  windowId: number,
  options: { receiveCount?: number } = {},
): Promise<CopyResult> {
  const { v1, v2, config } = deps;
  const ctl = controlSchema(config);
  const window = await loadWindow(v2, config, windowId);
  const table = window.table_name;
  if (window.status === 'done') return { windowId, table, rowsCopied: 0, rowsInserted: 0, path: 'skipped' };
  await v2.query(
    `UPDATE ${ctl}.windows SET status = 'running', attempts = attempts + 1, started_at = coalesce(started_at, now()) WHERE id = $1`,
    [windowId],
  );

  const attempt = async (fast: boolean): Promise<CopyResult> => {
    const v1Client = await v1.connect();
    const v2Client = await v2.connect();
    // A connection lost mid-copy surfaces as the failed query below; its 'error' event must
    // not also crash the process.
    const ignore = () => undefined;
    v1Client.on('error', ignore);
    v2Client.on('error', ignore);
    let broken = false;
    try {
      await v1Client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      await v2Client.query('BEGIN');
      let rowsCopied: number;
      let rowsInserted: number;
      let foreignKeys: CopyResult['foreignKeys'] = 'row';
      if (fast) {
        if (await skipRowTriggers(v2Client, v2, config)) foreignKeys = 'window';
        rowsCopied = await streamWindow(
          v1Client,
          v2Client,
          config,
          window,
          qualified(config.schemas.v2, 'telemetry'),
        );
        if (foreignKeys === 'window') {
          // Only the COPY runs without triggers: the rest of the transaction fires them again.
          await v2Client.query(`SELECT set_config('session_replication_role', 'origin', true)`);
          await checkTelemetryParents(v1Client, v2Client, config, window);
        }
        rowsInserted = rowsCopied;
      } else {
        await v2Client.query(`CREATE TEMP TABLE stage (${stagingColumns(table)}) ON COMMIT DROP`);
        rowsCopied = await streamWindow(v1Client, v2Client, config, window, 'pg_temp.stage');
        if (table === 'devices') await v2Client.query(insertTemplatesFromStaging(config));
        await v2Client.query('SAVEPOINT before_insert');
        try {
          rowsInserted = (await v2Client.query(insertFromStaging(config, table))).rowCount ?? 0;
        } catch (error) {
          const code = sqlState(error);
          if (code.startsWith('22') || (code.startsWith('23') && code !== '23503' && code !== '23505')) {
            await findUnmappableRow(v2Client, config, window, error);
          }
          throw error;
        }
      }
      await v2Client.query(
        `UPDATE ${ctl}.windows SET status = 'done', rows_copied = $2, rows_inserted = $3, finished_at = now(), last_error = NULL
          WHERE id = $1`,
        [windowId, rowsCopied, rowsInserted],
      );
      await v2Client.query('COMMIT');
      await v1Client.query('COMMIT');
      return { windowId, table, rowsCopied, rowsInserted, path: fast ? 'fast' : 'staging', foreignKeys };
    } catch (error) {
      await v2Client.query('ROLLBACK').catch(() => {
        broken = true;
      });
      // A V1 COPY cut off half-way leaves its connection unusable: drop it rather than reuse.
      broken = true;
      throw error;
    } finally {
      v1Client.off('error', ignore);
      v2Client.off('error', ignore);
      v2Client.release(broken);
      v1Client.release(broken);
    }
  };

  try {
    if (table === 'telemetry') {
      try {
        return await attempt(true);
      } catch (error) {
        const code = sqlState(error);
        // Rows of this window are already in V2 (redelivery, a concurrent worker, dual writes),
        // or some row needs naming: take the careful path.
        if (!(code === '23505' || code.startsWith('22') || (code.startsWith('23') && code !== '23503')))
          throw error;
      }
    }
    return await attempt(false);
  } catch (error) {
    const named = classify(error, table, windowId);
    // On its last delivery a failing window goes to the DLQ: mark it failed, visibly.
    const lastDelivery = (options.receiveCount ?? 1) >= config.batch.maxReceiveCount;
    await v2
      .query(`UPDATE ${ctl}.windows SET status = $2, last_error = $3 WHERE id = $1 AND status <> 'done'`, [
        windowId,
        lastDelivery ? 'failed' : 'queued',
        `${named.name}: ${named.message}`,
      ])
      .catch(() => undefined);
    throw named;
  }
}

/** Gives every failure a name the queue, the DLQ and the state machine can act on. */
function classify(error: unknown, table: MappedTable, windowId: number): MigrationError {
  if (error instanceof MigrationError) return error;
  const code = sqlState(error);
  const message = safeMessage(error);
  if (code === '23503') return new ParentRowsMissingError(table, windowId, message, { cause: error });
  if (isTransient(error) || isConnectionFailure(error)) {
    return new TransientDatabaseError(
      `window ${windowId} of ${table}: ${message}`,
      { table, windowId },
      { cause: error },
    );
  }
  return new WindowCopyError(table, windowId, message, { cause: error });
}
