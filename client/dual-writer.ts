import { isDeepStrictEqual } from 'node:util';
import type { Pool } from 'pg';
import { z } from 'zod';
import { describeIssues } from '../lambdas/core/config';
import { ident } from '../lambdas/core/db';
import { ConfigError, DualWriteV2Error } from '../lambdas/core/errors';
import { mapRow, type V1Row } from '../lambdas/core/mapping';
import type { QueuePort } from '../lambdas/ports/queue';
import { repairMessage, repairRow } from './repair-worker';
import {
  parseId,
  parseInsert,
  parsePatch,
  parseTable,
  readV1Row,
  V1_QUERY_TYPES,
  v1Table,
  type ClientTable,
  type RowId,
  type V1Insert,
  type V1Patch,
  type V1Rows,
} from './v1-rows';
import { clientSettings, V2RowSync, type ClientSettings, type ClientSettingsInput, runHook } from './v2-sync';

/** Metric counting every V2 write that failed (the caller's V1 write still succeeded). */
export const DUAL_WRITE_V2_FAILURE_METRIC = 'DualWriteV2Failure';
/** Metric counting repair messages that could not be sent either. */
export const DUAL_WRITE_REPAIR_ENQUEUE_FAILURE_METRIC = 'DualWriteRepairEnqueueFailure';
/** Metric counting errors of idle V2 connections (reported so they cannot crash the backend). */
export const DUAL_WRITE_V2_CONNECTION_ERROR_METRIC = 'DualWriteV2ConnectionError';
/** How long the V2 half of a write may take before it counts as failed. */
export const DEFAULT_V2_TIMEOUT_MS = 2_000;

export type DualWriteOperation = 'insert' | 'update' | 'delete';

/** What `onV2Failure` is told: the row, the failure, and whether its repair was queued. */
export interface DualWriteFailure {
  table: ClientTable;
  id: string;
  operation: DualWriteOperation;
  error: DualWriteV2Error;
  /** Whether the repair message reached the repair queue. */
  repairQueued: boolean;
  /** Why the repair message could not be sent, when it could not. */
  repairError?: unknown;
}

export interface DualWriterOptions extends ClientSettingsInput {
  /** The V1 database: the source of truth; its errors are the caller's errors. */
  readonly v1: Pool;
  /** The V2 database: written after V1; its failures never reach the caller. */
  readonly v2: Pool;
  /** Whether to write V2 too (a TrafficRouter); asked after each V1 write. */
  readonly router: { dualWriteEnabled(): boolean };
  /** Where repair messages of rows whose V2 write failed go (an SqsQueue on AWS). */
  readonly repairQueue: QueuePort;
  /**
   * How long the V2 half of one write may take before it counts as failed (and is repaired).
   * @default DEFAULT_V2_TIMEOUT_MS
   */
  readonly v2TimeoutMs?: number;
  /** Called with a metric name and value (e.g. to emit an EMF metric). */
  readonly onMetric?: (name: string, value: number) => void;
  /** Called once per failed V2 write, after its repair was (or could not be) queued. */
  readonly onV2Failure?: (failure: DualWriteFailure) => void;
}

const optionsSchema = z.object({
  v2TimeoutMs: z.number().int().positive().max(600_000).default(DEFAULT_V2_TIMEOUT_MS),
});

/** What `toV2` is given by a write that reads V1 again itself (no `confirm` needed). */
const SELF_CONFIRMED = Symbol('self-confirmed');

class V2Timeout extends Error {
  override readonly name = 'V2Timeout';
}

/**
 * What the IoT backend calls for writes during the migration. Each write goes to V1 first; the
 * V1 row (`RETURNING *`) is what the caller gets, and V1's errors are the caller's errors. Then,
 * if dual-write is on, the same row goes to V2 under the one mapping (`mapRow`) with the tenant,
 * as an upsert that always stores the newest V1 state (the backfill never overwrites a row, so
 * a write racing it is safe either way); V1 is then read again, and a row that another write
 * changed meanwhile is re-synced from V1 (`confirm`). A V2 failure never fails the caller: it is counted,
 * reported and recorded for repair (a `repair-row` message naming the row).
 *
 * V1 rows use Prisma's column names; timestamps are Dates (or ISO strings with a zone) and are
 * stored as UTC, as Prisma does. Backends that write V1 themselves (e.g. with Prisma in a
 * transaction) call `mirror` / `mirrorDelete` after their commit instead.
 */
export class DualWriter {
  private readonly settings: ClientSettings;
  private readonly sync: V2RowSync;
  private readonly v2TimeoutMs: number;

  constructor(private readonly options: DualWriterOptions) {
    this.settings = clientSettings(options, 'DualWriter options');
    const parsed = optionsSchema.safeParse({ v2TimeoutMs: options.v2TimeoutMs });
    if (!parsed.success) throw new ConfigError(describeIssues(parsed.error), 'DualWriter options');
    this.v2TimeoutMs = parsed.data.v2TimeoutMs;
    this.sync = new V2RowSync(options.v2, this.settings.v2Schema, this.settings.tenantId);
    // An idle V2 connection that is lost emits 'error' on the pool: unheard, it would crash the backend.
    options.v2.on('error', () => this.metric(DUAL_WRITE_V2_CONNECTION_ERROR_METRIC));
  }

  /** Inserts a V1 row (then V2); returns the V1 row as stored. */
  async insert<T extends ClientTable>(table: T, row: V1Insert<T>): Promise<V1Rows[T]> {
    const t = parseTable(table);
    const entries = parseInsert(t, row);
    const { rows } = await this.options.v1.query({
      text: `INSERT INTO ${v1Table(this.settings.v1Schema, t)} (${entries.map(([c]) => ident(c)).join(', ')})
             VALUES (${entries.map((_, i) => `$${i + 1}`).join(', ')}) RETURNING *`,
      values: entries.map(([, v]) => v),
      types: V1_QUERY_TYPES,
    });
    const stored = rows[0] as V1Rows[T];
    await this.toV2(
      t,
      stored.id,
      'insert',
      () => this.sync.upsert(t, stored as unknown as Record<string, unknown>, { replaceStale: false }),
      stored,
    );
    return stored;
  }

  /** Updates the given columns of a V1 row (then V2); returns the V1 row as stored, or null if there is none. */
  async update<T extends ClientTable>(table: T, id: RowId, patch: V1Patch<T>): Promise<V1Rows[T] | null> {
    const t = parseTable(table);
    const key = parseId(t, id);
    const entries = parsePatch(t, patch);
    const { rows } = await this.options.v1.query({
      text: `UPDATE ${v1Table(this.settings.v1Schema, t)} SET ${entries.map(([c], i) => `${ident(c)} = $${i + 2}`).join(', ')}
              WHERE id = $1 RETURNING *`,
      values: [key, ...entries.map(([, v]) => v)],
      types: V1_QUERY_TYPES,
    });
    if (rows.length === 0) return null;
    const stored = rows[0] as V1Rows[T];
    await this.toV2(
      t,
      key,
      'update',
      () => this.sync.upsert(t, stored as unknown as Record<string, unknown>, { replaceStale: true }),
      stored,
    );
    return stored;
  }

  /**
   * Deletes a V1 row (then V2; V1's cascades have their V2 counterparts); returns the deleted
   * V1 row, or null if there was none.
   */
  async delete<T extends ClientTable>(table: T, id: RowId): Promise<V1Rows[T] | null> {
    const t = parseTable(table);
    const key = parseId(t, id);
    const { rows } = await this.options.v1.query({
      text: `DELETE FROM ${v1Table(this.settings.v1Schema, t)} WHERE id = $1 RETURNING *`,
      values: [key],
      types: V1_QUERY_TYPES,
    });
    await this.toV2(t, key, 'delete', () => this.sync.remove(t, key), null);
    return (rows[0] as V1Rows[T] | undefined) ?? null;
  }

  /**
   * Writes the V2 half for a V1 row the backend has just written itself (read back with its
   * V1 column names). Never throws; a failure is reported and queued for repair like any other.
   */
  async mirror<T extends ClientTable>(table: T, v1Row: V1Rows[T]): Promise<void> {
    await this.toV2(
      table,
      (v1Row as { id?: unknown } | null)?.id,
      'update',
      (t) => this.sync.upsert(t, v1Row as unknown as Record<string, unknown>, { replaceStale: true }),
      v1Row,
    );
  }

  /** Writes the V2 half of a V1 delete the backend has just done itself. Never throws. */
  async mirrorDelete(table: ClientTable, id: RowId): Promise<void> {
    await this.toV2(table, id, 'delete', (t, key) => this.sync.remove(t, key), null);
  }

  /**
   * Writes the V2 half of a row the backend has just written itself, knowing only its id (e.g.
   * a row written in a transaction, once it has committed): V1's committed row is read and
   * upserted to V2, or V2's row deleted when V1 has none, until V1 holds still (as the repair
   * worker does). Never throws; a failure is reported and queued for repair like any other.
   */
  async mirrorById(table: ClientTable, id: RowId): Promise<void> {
    await this.toV2(table, id, 'update', (t, key) => repairRow(this.options, t, key), SELF_CONFIRMED);
  }

  /**
   * The V2 half: skipped when dual-write is off; never throws into the caller. `written` is the
   * V1 state it writes (null for a delete), checked against V1 afterwards (see `confirm`).
   */
  private async toV2(
    table: unknown,
    id: unknown,
    operation: DualWriteOperation,
    write: (table: ClientTable, id: string) => Promise<unknown>,
    written: unknown,
  ): Promise<void> {
    let row: { table: ClientTable; id: string } | undefined;
    try {
      if (!this.options.router.dualWriteEnabled()) return;
      const t = parseTable(table);
      const target = { table: t, id: parseId(t, id) };
      row = target;
      await this.withTimeout(
        (async () => {
          await write(target.table, target.id);
          if (written !== SELF_CONFIRMED) await this.confirm(target.table, target.id, written);
        })(),
      );
    } catch (cause) {
      await this.recordFailure(
        row ?? { table: String(table), id: String(id) },
        operation,
        cause,
        row !== undefined,
      );
    }
  }

  /**
   * Reads the V1 row again after its V2 write. Two writes of one row can reach V2 in the
   * opposite order to V1 (A writes V1, B writes V1, B writes V2, A writes V2): then V1 no
   * longer holds what this write gave V2, and the row is re-synced from V1 as the repair worker
   * does. Whichever write finishes last sees V1's latest state, so V2 ends as V1 ends.
   */
  private async confirm(table: ClientTable, id: string, written: unknown): Promise<void> {
    const current = await readV1Row(this.options.v1, this.settings.v1Schema, table, id);
    if (sameMapped(table, written, current, this.settings.tenantId)) return;
    await repairRow(this.options, table, id);
  }

  private withTimeout<T>(work: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new V2Timeout(`no answer from V2 within ${this.v2TimeoutMs} ms`)),
        this.v2TimeoutMs,
      );
    });
    // The write may still fail after the timeout won; that must not become an unhandled rejection.
    work.catch(() => undefined);
    return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
  }

  private async recordFailure(
    row: { table: string; id: string },
    operation: DualWriteOperation,
    cause: unknown,
    repairable: boolean,
  ): Promise<void> {
    const reason = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
    const error = new DualWriteV2Error(row.table, row.id, operation, reason, { cause });
    this.metric(DUAL_WRITE_V2_FAILURE_METRIC);
    let repairQueued = false;
    let repairError: unknown;
    if (repairable) {
      try {
        await this.options.repairQueue.sendAll([repairMessage(row.table as ClientTable, row.id)]);
        repairQueued = true;
      } catch (sendError) {
        repairError = sendError;
        this.metric(DUAL_WRITE_REPAIR_ENQUEUE_FAILURE_METRIC);
      }
    } else {
      // A mirror call without a valid table and id names no row that a repair could re-sync.
      repairError = cause;
      this.metric(DUAL_WRITE_REPAIR_ENQUEUE_FAILURE_METRIC);
    }
    this.hook(() =>
      this.options.onV2Failure?.({
        table: row.table as ClientTable,
        id: row.id,
        operation,
        error,
        repairQueued,
        ...(repairQueued ? {} : { repairError }),
      }),
    );
  }

  private metric(name: string): void {
    this.hook(() => this.options.onMetric?.(name, 1));
  }

  private hook(callback: () => void): void {
    runHook(callback, 'DualWriterCallbackWarning');
  }
}

/** Whether two V1 states of a row (null: no row) give the same V2 row (JSON key order aside). */
function sameMapped(table: ClientTable, a: unknown, b: unknown, tenantId: string): boolean {
  if (a === null || a === undefined || b === null || b === undefined) return (a ?? null) === (b ?? null);
  const v2 = (row: unknown) => mapRow(table, row as V1Row, { tenantId });
  return isDeepStrictEqual(v2(a), v2(b));
}
