import type { Pool } from 'pg';
import { z } from 'zod';
import { describeIssues } from '../lambdas/core/config';
import { ident } from '../lambdas/core/db';
import { ConfigError, DualWriteV2Error } from '../lambdas/core/errors';
import type { QueuePort } from '../lambdas/ports/queue';
import type { V2Source } from '../lambdas/core/mapping-inverse';
import { repairMessage, syncRow, type SyncOptions } from '../lambdas/core/sync/repair';
import { syncRowToV1 } from '../lambdas/core/sync/reverse';
import { clientSettings, type ClientSettings, type ClientSettingsInput } from '../lambdas/core/sync/row-sync';
import { V1_QUERY_TYPES, v1SourceSql, v1Table, type V1Source } from '../lambdas/core/sync/v1-read';
import { DEFAULT_LEGACY_ID_BLOCK, LegacyIdAllocator, V2PrimaryWrites } from '../lambdas/core/sync/v2-writes';
import { DualWriteV1Error } from '../lambdas/core/write-switch-errors';
import type { WritePrimary } from '../lambdas/ports/parameters';
import { runHook } from './hooks';
import {
  parseId,
  parseInsert,
  parsePatch,
  parseTable,
  type ClientTable,
  type RowId,
  type V1Insert,
  type V1Patch,
  type V1Rows,
} from './v1-rows';

/** Metric counting every V2 write that failed (the caller's V1 write still succeeded). */
export const DUAL_WRITE_V2_FAILURE_METRIC = 'DualWriteV2Failure';
/** Metric counting every V1 mirror write that failed while V2 is the write primary (the caller's V2 write succeeded). */
export const DUAL_WRITE_V1_FAILURE_METRIC = 'DualWriteV1Failure';
/** Metric counting repair messages that could not be sent either. */
export const DUAL_WRITE_REPAIR_ENQUEUE_FAILURE_METRIC = 'DualWriteRepairEnqueueFailure';
/** Metric counting errors of idle V2 connections (reported so they cannot crash the backend). */
export const DUAL_WRITE_V2_CONNECTION_ERROR_METRIC = 'DualWriteV2ConnectionError';
/** How long the V2 half of a write may take before it counts as failed. */
export const DEFAULT_V2_TIMEOUT_MS = 2_000;

export type DualWriteOperation = 'insert' | 'update' | 'delete';

/** What `onV2Failure` (or `onV1Failure`) is told: the row, the failure, and whether its repair was queued. */
export interface DualWriteFailure {
  table: ClientTable;
  id: string;
  operation: DualWriteOperation;
  /** DualWriteV2Error for a failed V2 half, DualWriteV1Error for a failed V1 mirror (V2 primary). */
  error: DualWriteV2Error | DualWriteV1Error;
  /** The side whose write failed (the mirror side: V2, or V1 once V2 is the write primary). */
  target: WritePrimary;
  /** Whether the repair message reached the repair queue. */
  repairQueued: boolean;
  /** Why the repair message could not be sent, when it could not. */
  repairError?: unknown;
}

export interface DualWriterOptions extends ClientSettingsInput {
  /**
   * The V1 database: the write primary until the write switch (its errors are the caller's
   * errors), then the mirror (its failures never reach the caller).
   */
  readonly v1: Pool;
  /** The V2 database: the mirror until the write switch, then the write primary. */
  readonly v2: Pool;
  /**
   * Whether to mirror each write to the other side, and which side is written first (a
   * TrafficRouter); asked at each write. Without `writePrimary`, V1 is always first.
   */
  readonly router: { dualWriteEnabled(): boolean; writePrimary?(): WritePrimary };
  /** Where repair messages of rows whose V2 write failed go (an SqsQueue on AWS). */
  readonly repairQueue: QueuePort;
  /**
   * How long the mirror half of one write (V2, or V1 once V2 is the write primary) may take
   * before it counts as failed (and is repaired).
   * @default DEFAULT_V2_TIMEOUT_MS
   */
  readonly v2TimeoutMs?: number;
  /**
   * V1 ids reserved at a time from V1's `device_data` sequence for telemetry rows written to V2
   * first (see LegacyIdAllocator).
   * @default DEFAULT_LEGACY_ID_BLOCK
   */
  readonly legacyIdBlockSize?: number;
  /** Called with a metric name and value (e.g. to emit an EMF metric). */
  readonly onMetric?: (name: string, value: number) => void;
  /** Called once per failed V2 write, after its repair was (or could not be) queued. */
  readonly onV2Failure?: (failure: DualWriteFailure) => void;
  /** Called once per failed V1 mirror write (V2 the write primary), after its repair was (or could not be) queued. */
  readonly onV1Failure?: (failure: DualWriteFailure) => void;
}

const optionsSchema = z.object({
  v2TimeoutMs: z.number().int().positive().max(600_000).default(DEFAULT_V2_TIMEOUT_MS),
  legacyIdBlockSize: z.number().int().min(1).max(100_000).default(DEFAULT_LEGACY_ID_BLOCK),
});

class MirrorTimeout extends Error {
  override readonly name = 'MirrorTimeout';
}

/** The RETURNING column that carries the written row's source text to the V2 half. */
const SOURCE = '__iot_v2_migration_source';

/**
 * What the IoT backend calls for writes during the migration. Each write goes to V1 first; the
 * V1 row (`RETURNING *`) is what the caller gets, and V1's errors are the caller's errors. Then,
 * if dual-write is on, the same row goes to V2 through the migration's one mapping, the
 * backfill's SQL projection (`syncRow`: the row travels as PostgreSQL text, never as JavaScript
 * values), as an upsert that always stores the newest V1 state (the backfill never overwrites
 * a row, so a write racing it is safe either way); V1 is then read again, and a row that
 * another write changed meanwhile is synced again, so V2 ends as V1 ends. A V2 failure never
 * fails the caller: it is counted, reported and recorded for repair (a `repair-row` message
 * naming the row).
 *
 * V1 rows use Prisma's column names; timestamps are Dates (or ISO strings with a zone) and are
 * stored as UTC, as Prisma does. Backends that write V1 themselves (e.g. with Prisma in a
 * transaction) call `mirror` / `mirrorDelete` after their commit instead.
 *
 * After the write switch (the router's `writePrimary()` is `v2`) the same calls write V2 first:
 * the V1-shaped row goes to V2 under the forward mapping, in SQL (V1's defaults fill what is not
 * given; V2's errors are the caller's), and the caller gets the row as V1 will hold it. Then, if
 * dual-write is on, V1 is kept current from V2 through the inverse mapping (`syncRowToV1`: V2's
 * row as text, projected into V1's columns on V1, V2 read again until it holds still); a failed
 * V1 mirror never fails the caller and goes to the repair queue (`from: "v2"`). A telemetry row
 * inserted without an id gets one from V1's own sequence (LegacyIdAllocator), so V2's
 * `legacy_id` and V1's id stay one.
 */
export class DualWriter {
  private readonly settings: ClientSettings;
  private readonly v2TimeoutMs: number;
  private readonly v2First: V2PrimaryWrites;
  private readonly legacyIds: LegacyIdAllocator;

  constructor(private readonly options: DualWriterOptions) {
    this.settings = clientSettings(options, 'DualWriter options');
    const parsed = optionsSchema.safeParse({
      v2TimeoutMs: options.v2TimeoutMs,
      legacyIdBlockSize: options.legacyIdBlockSize,
    });
    if (!parsed.success) throw new ConfigError(describeIssues(parsed.error), 'DualWriter options');
    this.v2TimeoutMs = parsed.data.v2TimeoutMs;
    this.v2First = new V2PrimaryWrites(options.v2, this.settings.v2Schema, this.settings.tenantId);
    this.legacyIds = new LegacyIdAllocator(options.v1, this.settings.v1Schema, parsed.data.legacyIdBlockSize);
    // An idle V2 connection that is lost emits 'error' on the pool: unheard, it would crash the backend.
    options.v2.on('error', () => this.metric(DUAL_WRITE_V2_CONNECTION_ERROR_METRIC));
  }

  /** Which side this write goes to first. */
  private primary(): WritePrimary {
    return this.options.router.writePrimary?.() === 'v2' ? 'v2' : 'v1';
  }

  /** Inserts a V1 row into the write primary (then mirrors it); returns the V1 row as stored. */
  async insert<T extends ClientTable>(table: T, row: V1Insert<T>): Promise<V1Rows[T]> {
    const t = parseTable(table);
    const entries = parseInsert(t, row);
    if (this.primary() === 'v2') {
      if (t === 'telemetry' && !entries.some(([c]) => c === 'id'))
        entries.unshift(['id', (await this.legacyIds.take(1))[0]]);
      const written = await this.v2First.insert(t, entries);
      await this.toV1(t, written.row.id, 'insert', written.source);
      return written.row as unknown as V1Rows[T];
    }
    const stored = await this.writeV1<T>(
      t,
      `INSERT INTO ${v1Table(this.settings.v1Schema, t)} (${entries.map(([c]) => ident(c)).join(', ')})
       VALUES (${entries.map((_, i) => `$${i + 1}`).join(', ')})`,
      entries.map(([, v]) => v),
    );
    await this.toV2(t, stored!.row.id, 'insert', { known: stored!.source, inserted: true });
    return stored!.row;
  }

  /**
   * Updates the given columns of a row in the write primary (then mirrors it); returns the V1
   * row as stored, or null if there is none.
   */
  async update<T extends ClientTable>(table: T, id: RowId, patch: V1Patch<T>): Promise<V1Rows[T] | null> {
    const t = parseTable(table);
    const key = parseId(t, id);
    const entries = parsePatch(t, patch);
    if (this.primary() === 'v2') {
      const written = await this.v2First.update(t, key, entries);
      if (!written) return null;
      await this.toV1(t, key, 'update', written.source);
      return written.row as unknown as V1Rows[T];
    }
    const stored = await this.writeV1<T>(
      t,
      `UPDATE ${v1Table(this.settings.v1Schema, t)} SET ${entries.map(([c], i) => `${ident(c)} = $${i + 2}`).join(', ')}
        WHERE id = $1`,
      [key, ...entries.map(([, v]) => v)],
    );
    if (!stored) return null;
    await this.toV2(t, key, 'update', { known: stored.source });
    return stored.row;
  }

  /**
   * Deletes a row from the write primary (then the mirror; each side's cascades have their
   * counterparts on the other); returns the deleted V1 row, or null if there was none.
   */
  async delete<T extends ClientTable>(table: T, id: RowId): Promise<V1Rows[T] | null> {
    const t = parseTable(table);
    const key = parseId(t, id);
    if (this.primary() === 'v2') {
      const written = await this.v2First.remove(t, key);
      await this.toV1(t, key, 'delete', null);
      return (written?.row ?? null) as V1Rows[T] | null;
    }
    const stored = await this.writeV1<T>(
      t,
      `DELETE FROM ${v1Table(this.settings.v1Schema, t)} WHERE id = $1`,
      [key],
    );
    await this.toV2(t, key, 'delete', { known: null });
    return stored?.row ?? null;
  }

  /**
   * Writes the mirror half for a row the backend has just written itself to `from` (by default
   * the write primary): for V1 (read back with its V1 column names), V1's current state of the
   * row is what V2 gets; for V2, V2's current state is what V1 gets. Never throws; a failure is
   * reported and queued for repair like any other.
   */
  async mirror<T extends ClientTable>(table: T, v1Row: V1Rows[T], from?: WritePrimary): Promise<void> {
    const id = (v1Row as { id?: unknown } | null)?.id;
    if ((from ?? this.primary()) === 'v2') await this.toV1(table, id, 'update', undefined);
    else await this.toV2(table, id, 'update', {});
  }

  /** Writes the mirror half of a delete the backend has just done itself on `from` (by default the write primary). Never throws. */
  async mirrorDelete(table: ClientTable, id: RowId, from?: WritePrimary): Promise<void> {
    if ((from ?? this.primary()) === 'v2') await this.toV1(table, id, 'delete', null);
    else await this.toV2(table, id, 'delete', { known: null });
  }

  /** One V1 write statement with `RETURNING *` and the row's source text, split apart. */
  private async writeV1<T extends ClientTable>(
    table: ClientTable,
    statement: string,
    values: unknown[],
  ): Promise<{ row: V1Rows[T]; source: V1Source } | null> {
    const { rows } = await this.options.v1.query({
      text: `${statement} RETURNING *, ${v1SourceSql(table)} AS ${SOURCE}`,
      values,
      types: V1_QUERY_TYPES,
    });
    if (rows.length === 0) return null;
    const { [SOURCE]: source, ...row } = rows[0] as Record<string, unknown>;
    return { row: row as unknown as V1Rows[T], source: source as V1Source };
  }

  /**
   * Writes the mirror half of a row the backend has just written itself to `from` (by default
   * the write primary), knowing only its id (e.g. a row written in a transaction, once it has
   * committed): the committed row is synced to the other side, or the other side's row deleted
   * when there is none, until the written side holds still (`syncRow`, `syncRowToV1`). Never
   * throws; a failure is reported and queued for repair like any other.
   */
  async mirrorById(table: ClientTable, id: RowId, from?: WritePrimary): Promise<void> {
    if ((from ?? this.primary()) === 'v2') await this.toV1(table, id, 'update', undefined);
    else await this.toV2(table, id, 'update', {});
  }

  /**
   * The V2 half: skipped when dual-write is off; never throws into the caller. `sync` says what
   * is known of the row's V1 state; V1 is read again afterwards (see `syncRow`).
   */
  private toV2(table: unknown, id: unknown, operation: DualWriteOperation, sync: SyncOptions): Promise<void> {
    return this.toMirror('v2', table, id, operation, (t, key) => syncRow(this.options, t, key, sync));
  }

  /**
   * The V1 half while V2 is the write primary (the reverse mirror): skipped when dual-write is
   * off; never throws into the caller. `known` is V2's row just written (its source text), null
   * after a delete, or undefined to read it; V2 is read again afterwards (see `syncRowToV1`).
   */
  private toV1(
    table: unknown,
    id: unknown,
    operation: DualWriteOperation,
    known: V2Source | null | undefined,
  ): Promise<void> {
    return this.toMirror('v1', table, id, operation, (t, key) =>
      syncRowToV1(this.options, t, key, known === undefined ? {} : { known }),
    );
  }

  /**
   * One mirror half, to `target`: skipped when dual-write is off; `sync` runs within the mirror
   * timeout; a failure (a bad table or id included) is recorded and queued for repair, never
   * thrown into the caller.
   */
  private async toMirror(
    target: WritePrimary,
    table: unknown,
    id: unknown,
    operation: DualWriteOperation,
    sync: (table: ClientTable, id: string) => Promise<unknown>,
  ): Promise<void> {
    let row: { table: ClientTable; id: string } | undefined;
    try {
      if (!this.options.router.dualWriteEnabled()) return;
      const t = parseTable(table);
      row = { table: t, id: parseId(t, id) };
      await this.withTimeout(sync(row.table, row.id));
    } catch (cause) {
      await this.recordFailure(
        row ?? { table: String(table), id: String(id) },
        operation,
        cause,
        row !== undefined,
        target,
      );
    }
  }

  private withTimeout<T>(work: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new MirrorTimeout(`no answer within ${this.v2TimeoutMs} ms`)),
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
    target: WritePrimary,
  ): Promise<void> {
    const reason = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
    const error =
      target === 'v2'
        ? new DualWriteV2Error(row.table, row.id, operation, reason, { cause })
        : new DualWriteV1Error(row.table, row.id, operation, reason, { cause });
    this.metric(target === 'v2' ? DUAL_WRITE_V2_FAILURE_METRIC : DUAL_WRITE_V1_FAILURE_METRIC);
    let repairQueued = false;
    let repairError: unknown;
    if (repairable) {
      try {
        // The repair syncs the row from the side that holds the write.
        const from = target === 'v2' ? 'v1' : 'v2';
        await this.options.repairQueue.sendAll([repairMessage(row.table as ClientTable, row.id, from)]);
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
    const failure: DualWriteFailure = {
      table: row.table as ClientTable,
      id: row.id,
      operation,
      error,
      target,
      repairQueued,
      ...(repairQueued ? {} : { repairError }),
    };
    this.hook(() => (target === 'v2' ? this.options.onV2Failure : this.options.onV1Failure)?.(failure));
  }

  private metric(name: string): void {
    this.hook(() => this.options.onMetric?.(name, 1));
  }

  private hook(callback: () => void): void {
    runHook(callback, 'DualWriterCallbackWarning');
  }
}
