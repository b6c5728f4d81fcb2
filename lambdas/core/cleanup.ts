import { STORED_DIGEST } from './digest';
import { controlSchema, ident, withTransaction } from './db';
import { ConfirmationRequiredError, GuardRefusedError } from './errors';
import {
  auditEvent,
  beginPhase,
  endPhase,
  phaseStates,
  readParameter,
  setParameter,
  type MigrationContext,
} from './migration-state';
import { waitForBackup } from './prepare';
import { addCompressionPolicy } from './storage';
import { cutoverStatus } from './cutover';
import { countV1Rows, V1_TABLE_NAMES } from './v1-schema';
import { writePrimaryOf } from './write-switch';
import type { BackupRef } from '../ports/backup';

/**
 * Phase 5: stop dual-write, archive V1 (a backup, waited on and checked), rename the V1 tables
 * to `<name>_v1_archived` in one transaction; dropping them is a separate, confirmed act that
 * only the end of the retention period allows.
 */

/** The words an operator must pass to drop the archived V1 tables. */
export const DROP_CONFIRMATION = 'DROP V1 ARCHIVES';
/** The words an operator must pass to start cleanup, which stops dual-write and renames V1's tables. */
export const RENAME_CONFIRMATION = 'RENAME V1 TABLES';

/** Refuses cleanup (ConfirmationRequiredError, nothing changed) without its confirmation words. */
export function assertRenameConfirmed(confirm: string | undefined): void {
  if (confirm !== RENAME_CONFIRMATION) {
    throw new ConfirmationRequiredError(
      'Cleanup',
      "stops dual-write, archives V1 and renames V1's tables to <name>_v1_archived (V1 then takes no more reads or writes)",
      RENAME_CONFIRMATION,
      'start the Migration state machine with {"action":"advance","confirm":"' +
        RENAME_CONFIRMATION +
        '"} (or `migrate advance --confirm "' +
        RENAME_CONFIRMATION +
        '"`)',
    );
  }
}

/** What a cleanup step is asked with: the confirmation words. */
export interface CleanupRequest {
  confirm?: string;
}

export const archivedName = (table: string) => `${table}_v1_archived`;

/**
 * Cleanup's guards: the cutover complete, traffic at 100 % for the soak time, and the writes
 * switched to V2 (cleanup ends the reverse mirror that keeps V1 current; before the write switch
 * V1 is still the write primary, and stopping dual-write would leave V2 behind).
 */
export async function cleanupGuards(ctx: MigrationContext): Promise<string[]> {
  const reasons: string[] = [];
  const states = await phaseStates(ctx);
  const missing = states.slice(0, 4).filter((s) => s.status !== 'done');
  if (missing.length > 0) reasons.push(`${missing.map((s) => s.phase).join(', ')} not complete`);
  const traffic = await readParameter(ctx, 'trafficPercentage');
  if (traffic !== '100') reasons.push(`traffic is at ${traffic ?? 'unset'} %, not 100 %`);
  const status = await cutoverStatus(ctx);
  const soakMs = ctx.config.cutover.soakMinutes * 60_000;
  if (!status.reachedFullAt) reasons.push('traffic has never reached 100 %');
  else if (Date.now() - Date.parse(status.reachedFullAt) < soakMs) {
    const left = Math.ceil((soakMs - (Date.now() - Date.parse(status.reachedFullAt))) / 60_000);
    reasons.push(
      `traffic reached 100 % at ${status.reachedFullAt}; the soak time of ${ctx.config.cutover.soakMinutes} minutes has ${left} minute(s) left`,
    );
  }
  if ((await writePrimaryOf(ctx)) !== 'v2')
    reasons.push(
      'writes are not switched to V2: run the write switch first (Cutover {"action":"switch-writes"})',
    );
  return reasons;
}

/**
 * Begins Phase 5 and stops dual-write (the reverse mirror ends: the backend writes V2 alone);
 * returns the archive backup's reference once started. Needs the confirmation words
 * (RENAME_CONFIRMATION).
 */
export async function startCleanup(ctx: MigrationContext, request: CleanupRequest): Promise<BackupRef> {
  assertRenameConfirmed(request.confirm);
  const reasons = await cleanupGuards(ctx);
  if (reasons.length > 0) throw new GuardRefusedError('Cleanup', reasons);
  if (!ctx.backup) throw new GuardRefusedError('Cleanup', ['no backup port to archive V1 with']);
  await beginPhase(ctx, 'CLEANUP');
  await setParameter(ctx, 'dualWrite', 'off', 'Phase 5: V2 is the only store, the reverse mirror to V1 ends');
  await ctx.v2.query(
    `INSERT INTO ${controlSchema(ctx.config)}.cleanup_state (id, dual_write_stopped_at) VALUES (1, now())
     ON CONFLICT (id) DO UPDATE SET dual_write_stopped_at = coalesce(cleanup_state.dual_write_stopped_at, now())`,
  );
  const ref = await ctx.backup.start('v1_archive');
  await ctx.v2.query(
    `UPDATE ${controlSchema(ctx.config)}.cleanup_state SET archive_backup = $1 WHERE id = 1`,
    [JSON.stringify(ref)],
  );
  await auditEvent(ctx, 'cleanup.archive-started', { ...ref });
  return ref;
}

/**
 * What finishing cleanup (the rename) re-checks, whoever asks: cleanup's guards still hold,
 * Phase 5 was started (with its confirmation) and has not renamed yet, dual-write is off, and
 * `ref` is the archive recorded when cleanup started (not, say, Phase 1's backup).
 */
export async function finishCleanupGuards(ctx: MigrationContext, ref: BackupRef): Promise<string[]> {
  const reasons = await cleanupGuards(ctx);
  const phase = (await phaseStates(ctx)).find((s) => s.phase === 'CLEANUP');
  if (phase?.status !== 'running')
    reasons.push(`Phase CLEANUP is ${phase?.status ?? 'pending'}, not running`);
  if ((await readParameter(ctx, 'dualWrite')) !== 'off') reasons.push('dual-write is not off');
  const state = await ctx.v2.query<{ archive_backup: string | null; renamed_at: Date | null }>(
    `SELECT archive_backup, renamed_at FROM ${controlSchema(ctx.config)}.cleanup_state WHERE id = 1`,
  );
  const recorded = state.rows[0]?.archive_backup
    ? (JSON.parse(state.rows[0].archive_backup) as BackupRef)
    : null;
  if (!recorded) reasons.push('no archive was recorded when cleanup started');
  else if (recorded.id !== ref.id || recorded.kind !== ref.kind || recorded.location !== ref.location)
    reasons.push(
      `the archive given (${ref.kind} ${ref.id}) is not the one cleanup started (${recorded.kind} ${recorded.id})`,
    );
  if (state.rows[0]?.renamed_at)
    reasons.push(`the V1 tables were already renamed at ${state.rows[0].renamed_at.toISOString()}`);
  return reasons;
}

/**
 * Checks the archive and renames the V1 tables in one transaction, recording their row counts.
 * Then, on TimescaleDB, adds the telemetry compression policy: nothing of the migration rewrites
 * history any more (see addCompressionPolicy). Needs the confirmation words, and refuses
 * (GuardRefusedError, nothing changed) unless finishCleanupGuards all pass.
 */
export async function finishCleanup(
  ctx: MigrationContext,
  ref: BackupRef,
  request: CleanupRequest,
): Promise<{ renamed: string[]; counts: Record<string, number>; compression: string }> {
  assertRenameConfirmed(request.confirm);
  if (!ctx.backup) throw new GuardRefusedError('Cleanup', ['no backup port to archive V1 with']);
  const reasons = await finishCleanupGuards(ctx, ref);
  if (reasons.length > 0) throw new GuardRefusedError('Renaming the V1 tables', reasons);
  const counts = await countV1Rows(ctx.v1, ctx.config.schemas.v1);
  await ctx.backup.verify(ref, counts);
  await ctx.v2.query(
    `INSERT INTO ${controlSchema(ctx.config)}.backups (id, kind, location, verified_at, row_counts) VALUES ($1, $2, $3, now(), $4) ON CONFLICT (id) DO NOTHING`,
    [ref.id, ref.kind, ref.location, JSON.stringify(counts)],
  );
  const schema = ident(ctx.config.schemas.v1);
  await withTransaction(ctx.v1Owner ?? ctx.v1, async (client) => {
    for (const table of V1_TABLE_NAMES) {
      await client.query(`ALTER TABLE ${schema}.${ident(table)} RENAME TO ${ident(archivedName(table))}`);
    }
  });
  await ctx.v2.query(
    `UPDATE ${controlSchema(ctx.config)}.cleanup_state SET renamed_at = now(), archived_counts = $1 WHERE id = 1`,
    [JSON.stringify(counts)],
  );
  const renamed = V1_TABLE_NAMES.map(archivedName);
  await auditEvent(ctx, 'cleanup.renamed', { renamed, counts });
  const compression = await addCompressionPolicy(ctx.v2, ctx.config);
  if (compression.policy === 'added') await auditEvent(ctx, 'storage.compression-policy-added', compression);
  await endPhase(ctx, 'CLEANUP', { renamed, counts, archive: ref.location, compression: compression.policy });
  return { renamed, counts, compression: compression.policy };
}

/** Cleanup in-process: start, wait for the archive, finish (with the confirmation words). */
export async function runCleanupLocally(
  ctx: MigrationContext,
  options: { pollMs?: number; confirm?: string } = {},
) {
  const ref = await startCleanup(ctx, { confirm: options.confirm });
  await waitForBackup(ctx.backup!, ref, { pollMs: options.pollMs ?? 1000 });
  return finishCleanup(ctx, ref, { confirm: options.confirm });
}

/**
 * Drops the archived V1 tables: only after the retention period since the rename, and only
 * with the explicit confirmation words.
 */
export async function dropArchives(ctx: MigrationContext, options: { confirm: string }): Promise<string[]> {
  const reasons: string[] = [];
  if (options.confirm !== DROP_CONFIRMATION)
    reasons.push(`the confirmation must be exactly "${DROP_CONFIRMATION}"`);
  const state = await ctx.v2.query<{ renamed_at: Date | null; dropped_at: Date | null }>(
    `SELECT renamed_at, dropped_at FROM ${controlSchema(ctx.config)}.cleanup_state WHERE id = 1`,
  );
  const renamedAt = state.rows[0]?.renamed_at;
  const retentionMs = ctx.config.cleanup.retentionDays * 86_400_000;
  if (!renamedAt) reasons.push('the V1 tables have not been archived');
  else if (Date.now() - renamedAt.getTime() < retentionMs) {
    const until = new Date(renamedAt.getTime() + retentionMs).toISOString();
    reasons.push(`the retention period of ${ctx.config.cleanup.retentionDays} days runs until ${until}`);
  }
  if (state.rows[0]?.dropped_at)
    reasons.push(`the archives were already dropped at ${state.rows[0].dropped_at.toISOString()}`);
  if (reasons.length > 0) {
    await auditEvent(ctx, 'cleanup.drop-refused', { reasons });
    throw new GuardRefusedError('Dropping the V1 archives', reasons);
  }
  const schema = ident(ctx.config.schemas.v1);
  await withTransaction(ctx.v1Owner ?? ctx.v1, async (client) => {
    // Children first: device_data and alerts reference devices, devices reference users.
    for (const table of [...V1_TABLE_NAMES].reverse()) {
      await client.query(`DROP TABLE ${schema}.${ident(archivedName(table))}`);
    }
  });
  await ctx.v2.query(`UPDATE ${controlSchema(ctx.config)}.cleanup_state SET dropped_at = now() WHERE id = 1`);
  const dropped = V1_TABLE_NAMES.map(archivedName);
  // With V1 gone there is nothing left to verify against: the row digest V2 telemetry kept for
  // verification goes too (a catalog change; the lock is waited for at most 5 s).
  const digest = await dropStoredDigest(ctx);
  await auditEvent(ctx, 'cleanup.archives-dropped', { dropped, ...digest });
  return digest.digestDropped ? [...dropped, digest.digestDropped] : dropped;
}

/** Drops V2 telemetry's stored row digest, if it has one; a failure is reported, not thrown. */
async function dropStoredDigest(
  ctx: MigrationContext,
): Promise<{ digestDropped?: string; digestKept?: string }> {
  const table = `${ident(ctx.config.schemas.v2)}.${ident(STORED_DIGEST.table)}`;
  const column = `${table}.${ident(STORED_DIGEST.column)}`;
  try {
    return await withTransaction(ctx.v2, async (client) => {
      const found = await client.query(
        `SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped`,
        [table, STORED_DIGEST.column],
      );
      if (found.rows.length === 0) return {};
      await client.query(`SET LOCAL lock_timeout = '5s'`);
      await client.query(`ALTER TABLE ${table} DROP COLUMN ${ident(STORED_DIGEST.column)}`);
      return { digestDropped: column };
    });
  } catch (error) {
    return { digestKept: `${column} was not dropped: ${(error as Error).message}` };
  }
}
