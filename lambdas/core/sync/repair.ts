import type { Pool } from 'pg';
import { z } from 'zod';
import { parseMessageBody } from '../config';
import { MigrationError, RepairRowError } from '../errors';
import { PARENT_OF, TABLE_ORDER, V1_COLUMNS, type MappedTable } from '../mapping';
import { partialBatchHandler, type BatchHandler, type QueueRecord } from '../../ports/queue';
import { isRetryableRowError, resolvedPerDeps, V2RowSync, type ClientSettingsInput } from './row-sync';
import { parseId, readV1Source, sameSource, SYNC_TABLES, type V1Source } from './v1-read';
import { describeError } from '../safe-error';
import { syncRowToV1 } from './reverse';
import { WRITE_PRIMARIES, type WritePrimary } from '../../ports/parameters';

/** The type of a repair message. */
export const REPAIR_MESSAGE_TYPE = 'repair-row';
/** Reads of a V1 row that keeps changing under a repair before the repair gives up (and is retried). */
export const REPAIR_MAX_ROUNDS = 5;

/**
 * A repair message names one row (V2 table, V1 id) and the side that holds its write (`from`:
 * V1, the default, or V2 once it is the write primary); it never carries the row itself.
 */
export const repairMessageSchema = z
  .object({
    type: z.literal(REPAIR_MESSAGE_TYPE),
    table: z.enum(SYNC_TABLES),
    id: z.string().min(1).max(1000),
    from: z.enum(WRITE_PRIMARIES).optional(),
  })
  .strict()
  .refine((m) => m.table !== 'telemetry' || /^[0-9]{1,19}$/.test(m.id), {
    path: ['id'],
    message: 'a telemetry id must be a V1 device_data id (digits)',
  });
export type RepairMessage = z.infer<typeof repairMessageSchema>;

/** The body of the repair message of one row, to be synced from `from` (V1 unless said). */
export function repairMessage(table: MappedTable, id: string, from: WritePrimary = 'v1'): string {
  return JSON.stringify({
    type: REPAIR_MESSAGE_TYPE,
    table,
    id,
    ...(from === 'v2' ? { from } : {}),
  } satisfies RepairMessage);
}

/** Parses a queue body; a malformed one gets InvalidMessageError (it fails only its own record). */
export function parseRepairMessage(body: string): RepairMessage {
  return parseMessageBody(repairMessageSchema, body);
}

/** What the repair needs: both databases, and where the rows live. */
export interface RepairDeps extends ClientSettingsInput {
  readonly v1: Pool;
  readonly v2: Pool;
}

export interface RepairResult {
  table: MappedTable;
  id: string;
  /**
   * `upserted`: the other side now holds the row as the side synced from has it; `deleted`: that
   * side has no such row, so the other has none either.
   */
  action: 'upserted' | 'deleted';
  /** The side the row was synced from (V1 unless the message said V2). */
  from?: WritePrimary;
}

// One resolved context (validated settings, template cache) per deps object.
const resolve = resolvedPerDeps(
  'repair worker settings',
  (deps: RepairDeps, settings) => new V2RowSync(deps.v2, settings.v2Schema, settings.tenantId),
);

/** What a sync of one row may know already, to save a read of V1. */
export interface SyncOptions {
  /**
   * The row's V1 state just written (its source text, e.g. from the write's RETURNING), or null
   * after a delete; V1 is read when absent.
   */
  known?: V1Source | null;
  /** True for a row just inserted: no stale V2 copy under another timestamp can exist yet. */
  inserted?: boolean;
}

/**
 * Syncs one row from V1 to V2: if V1 holds the row its state is upserted into V2 through the
 * mapping (for telemetry, a V2 copy under an older timestamp is removed), and if not, V2's row
 * is deleted. Idempotent. V1 is read again afterwards: if the row changed meanwhile the round
 * is repeated, so V2 never ends older than V1 after two writes of a row that raced each other.
 * Throws the underlying error; RepairRowError after REPAIR_MAX_ROUNDS changing rounds.
 */
export async function syncRow(
  deps: RepairDeps,
  table: MappedTable,
  id: string,
  options: SyncOptions = {},
): Promise<RepairResult> {
  const { settings, sync } = resolve(deps);
  const key = parseId(table, id);
  let row =
    options.known !== undefined ? options.known : await readV1Source(deps.v1, settings.v1Schema, table, key);
  for (let round = 1; round <= REPAIR_MAX_ROUNDS; round++) {
    if (row) await upsertWithParent(deps, table, row, { replaceStale: !(options.inserted && round === 1) });
    else await sync.remove(table, key);
    const again = await readV1Source(deps.v1, settings.v1Schema, table, key);
    if (sameSource(again, row)) return { table, id: key, action: row ? 'upserted' : 'deleted' };
    row = again;
  }
  throw new RepairRowError(table, key, `the V1 row changed during ${REPAIR_MAX_ROUNDS} rounds`, {
    retryable: true,
  });
}

/**
 * Upserts a V1 row into V2; when V2 refuses it for a parent it does not hold yet (23503: the
 * row's V1 state names a parent another write has just created, whose own V2 half is still on
 * its way), syncs that parent from V1 first and tries once more. A parent V1 lacks too leaves
 * the error as it was.
 */
async function upsertWithParent(
  deps: RepairDeps,
  table: MappedTable,
  row: V1Source,
  options: { replaceStale: boolean },
  depth = 0,
): Promise<void> {
  const { sync } = resolve(deps);
  try {
    await sync.upsert(table, row, options);
  } catch (error) {
    const parent = PARENT_OF[table];
    const code = (error as { code?: unknown }).code;
    if (!parent || code !== '23503' || depth >= TABLE_ORDER.length) throw error;
    const parentId = row[V1_COLUMNS[table].findIndex((c) => c.name === parent.column)];
    if (parentId === null || parentId === undefined) throw error;
    const { settings } = resolve(deps);
    const parentRow = await readV1Source(deps.v1, settings.v1Schema, parent.table, parseId(parent.table, parentId));
    if (!parentRow) throw error;
    await upsertWithParent(deps, parent.table, parentRow, { replaceStale: true }, depth + 1);
    await sync.upsert(table, row, options);
  }
}

/**
 * Re-syncs one row for the repair worker: from V1 to V2 (`syncRow`), or, for a row whose write
 * V2 holds (V2 the write primary), from V2 to V1 (`syncRowToV1`, V2 the truth). Failures are
 * RepairRowError, retryable when another try may succeed.
 */
export async function repairRow(
  deps: RepairDeps,
  table: MappedTable,
  id: string,
  from: WritePrimary = 'v1',
): Promise<RepairResult> {
  resolve(deps);
  const key = parseId(table, id);
  try {
    const result = from === 'v2' ? await syncRowToV1(deps, table, key) : await syncRow(deps, table, key);
    return from === 'v2' ? { ...result, from } : result;
  } catch (error) {
    if (error instanceof RepairRowError) throw error;
    const reason = describeError(error);
    throw new RepairRowError(table, key, reason, {
      cause: error,
      retryable: !(error instanceof MigrationError) && isRetryableRowError(error),
      target: from === 'v2' ? 'V1' : 'V2',
    });
  }
}

export interface RepairHooks {
  onRepaired?: (record: QueueRecord, result: RepairResult) => void;
  onError?: (record: QueueRecord, error: Error) => void;
}

/**
 * The repair worker as a batch handler with SQS partial batch responses: each record is
 * repaired on its own; a bad body (InvalidMessageError) or a failed repair fails only its record.
 */
export function repairBatchHandler(deps: RepairDeps, hooks: RepairHooks = {}): BatchHandler {
  resolve(deps);
  return partialBatchHandler(
    async (record) => {
      const message = parseRepairMessage(record.body);
      return repairRow(deps, message.table, message.id, message.from);
    },
    { onDone: hooks.onRepaired, onError: hooks.onError },
  );
}
