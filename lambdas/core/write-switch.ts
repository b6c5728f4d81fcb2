import { controlSchema, ident } from './db';
import { GuardRefusedError, RollbackRefusedError, VerificationFailedError } from './errors';
import { MAPPINGS, TABLE_ORDER } from './mapping';
import {
  auditEvent,
  phaseStates,
  readParameter,
  setParameter,
  type MigrationContext,
} from './migration-state';
import { cutoverStatus, DRIFT_REPAIR_WAIT_MS, recheckDrift } from './cutover';
import {
  buildReport,
  finishVerification,
  repairRunFromV2,
  verifyTouchedWindows,
  type VerificationReport,
} from './verify';
import {
  RepairQueueNotDrainedError,
  UnmirrorableRowsError,
  type UnmirrorableRow,
} from './write-switch-errors';
import type { WritePrimary } from '../ports/parameters';
import type { QueueDepthPort } from '../ports/queue';

/**
 * The write switch, the last step of Phase 4: once reads are at 100 % on V2 and the cutover has
 * passed its gates, V2 becomes the write primary (`<prefix>/write-primary` = `v2`): the backend
 * writes V2 first and keeps V1 current through the inverse mapping (the reverse mirror), so V1
 * stays a real way back until cleanup. Its rollback (`rollbackWritesPlan` … `switchWritesBack`,
 * run by the Rollback state machine before the reads go back) drains the repair queue, checks
 * the windows touched since the switch (repairing V1 from V2), refuses rows V1 cannot take, and
 * only then makes V1 the write primary again.
 */

/** How long the rollback waits for the repair queue to drain before it stops. @default 600 s */
export const DEFAULT_REPAIR_DRAIN_MAX_SECONDS = 600;

/** Rows named at most in UnmirrorableRowsError (the total is counted). */
export const UNMIRRORABLE_ROWS_LISTED = 50;

/** The write primary the deployed parameter names (V1 when it is missing). */
export async function writePrimaryOf(ctx: MigrationContext): Promise<WritePrimary> {
  return (await readParameter(ctx, 'writePrimary')) === 'v2' ? 'v2' : 'v1';
}

export interface WriteSwitchStatus {
  primary: WritePrimary;
  /** When writes last moved to V2, and since when the windows had been verified then. */
  switchedAt: string | null;
  verifiedSince: string | null;
  /** When writes last moved back to V1 (a rollback). */
  switchedBackAt: string | null;
}

/** The write primary and the switch's history, from the parameter and the audit log. */
export async function writeSwitchStatus(ctx: MigrationContext): Promise<WriteSwitchStatus> {
  const primary = await writePrimaryOf(ctx);
  const exists = await ctx.v2.query<{ t: string | null }>('SELECT to_regclass($1) AS t', [
    `${ctx.config.schemas.control}.audit_log`,
  ]);
  if (!exists.rows[0].t) return { primary, switchedAt: null, verifiedSince: null, switchedBackAt: null };
  const last = async (action: string) =>
    (
      await ctx.v2.query<{ at: Date; details: { verifiedSince?: string } }>(
        `SELECT at, details FROM ${controlSchema(ctx.config)}.audit_log WHERE action = $1 ORDER BY id DESC LIMIT 1`,
        [action],
      )
    ).rows[0];
  const switched = await last('writes.switched');
  const back = await last('writes.switched-back');
  return {
    primary,
    switchedAt: switched?.at.toISOString() ?? null,
    verifiedSince: switched?.details.verifiedSince ?? null,
    switchedBackAt: back?.at.toISOString() ?? null,
  };
}

/**
 * The write switch's guards: the cutover complete (every level's gate passed) and cleanup not
 * started, reads at 100 % on V2, dual-write on (V1 must be mirrored from the first write on).
 */
export async function writeSwitchGuards(ctx: MigrationContext): Promise<string[]> {
  const reasons: string[] = [];
  const states = await phaseStates(ctx);
  const missing = states.slice(0, 4).filter((s) => s.status !== 'done');
  if (missing.length > 0) reasons.push(`${missing.map((s) => s.phase).join(', ')} not complete`);
  if (states.find((s) => s.phase === 'CLEANUP')?.status !== 'pending')
    reasons.push('cleanup has started: V1 no longer follows V2');
  const traffic = await readParameter(ctx, 'trafficPercentage');
  if (traffic !== '100') reasons.push(`reads are at ${traffic ?? 'unset'} % on V2, not 100 %`);
  if ((await readParameter(ctx, 'dualWrite')) !== 'on') reasons.push('dual-write is not on');
  const cutover = await cutoverStatus(ctx);
  if (cutover.status !== 'complete') reasons.push(`the cutover is ${cutover.status}, not complete`);
  return reasons;
}

export interface WriteSwitchResult {
  changed: boolean;
  primary: WritePrimary;
  /** The verification of the windows touched since the last health gate (none when unchanged). */
  verification?: { runId: number; windows: number; clean: boolean; since: string };
}

/**
 * Makes V2 the write primary: guards, then a verification of the windows touched since the last
 * health gate (in V1 and in V2), which must be clean, then the parameter, audited. Idempotent:
 * writes already switched change nothing. Refusals are GuardRefusedError naming every reason,
 * audited, and change nothing.
 */
export async function switchWrites(
  ctx: MigrationContext & { repairQueue?: QueueDepthPort },
  options: { recheckDelayMs?: number; repairWaitMs?: number } = {},
): Promise<WriteSwitchResult> {
  if ((await writePrimaryOf(ctx)) === 'v2') {
    await auditEvent(ctx, 'writes.switch-unchanged', { primary: 'v2' });
    return { changed: false, primary: 'v2' };
  }
  const refuse = async (reasons: string[]): Promise<never> => {
    await auditEvent(ctx, 'writes.switch-refused', { reasons });
    throw new GuardRefusedError('Write switch', reasons);
  };
  const reasons = await writeSwitchGuards(ctx);
  if (reasons.length > 0) return refuse(reasons);
  const gate = await ctx.v2.query<{ last_gate_at: Date | null; reached_full_at: Date | null }>(
    `SELECT last_gate_at, reached_full_at FROM ${controlSchema(ctx.config)}.cutover_state WHERE id = 1`,
  );
  const since =
    gate.rows[0]?.last_gate_at ?? gate.rows[0]?.reached_full_at ?? new Date(Date.now() - 3_600_000);
  const verifyOptions = { recheckDelayMs: options.recheckDelayMs, inV2: true };
  const report = await recheckDrift(
    ctx,
    await verifyTouchedWindows(ctx, since, verifyOptions),
    () => verifyTouchedWindows(ctx, since, verifyOptions),
    { action: 'writes.switch-rechecked', repairWaitMs: options.repairWaitMs ?? DRIFT_REPAIR_WAIT_MS },
  );
  const checked = Object.values(report.tables).reduce((n, t) => n + t.windows, 0);
  const verification = {
    runId: report.runId,
    windows: checked,
    clean: report.clean,
    since: since.toISOString(),
  };
  if (!report.clean) {
    return refuse([
      `the verification of the windows touched since ${since.toISOString()} (run ${report.runId}) found ` +
        `${report.mismatches.length} mismatched window(s) (${report.mismatches
          .map((m) => `${m.table}#${m.windowId}`)
          .join(', ')}) and ${report.sample.differences.length} differing sampled row(s)`,
    ]);
  }
  await setParameter(ctx, 'writePrimary', 'v2', 'write switch: V2 is the write primary, V1 follows it');
  await auditEvent(ctx, 'writes.switched', {
    primary: 'v2',
    verifiedSince: since.toISOString(),
    verification,
  });
  return { changed: true, primary: 'v2', verification };
}

/** Rows V2 holds that V1 cannot take: of another tenant (any table), telemetry without a V1 id. */
export async function unmirrorableRows(
  ctx: MigrationContext,
  limit = UNMIRRORABLE_ROWS_LISTED,
): Promise<{ rows: UnmirrorableRow[]; total: number }> {
  const rows: UnmirrorableRow[] = [];
  let total = 0;
  const schema = ident(ctx.config.schemas.v2);
  for (const table of TABLE_ORDER) {
    const m = MAPPINGS[table];
    const from = `${schema}.${ident(m.v2Table)}`;
    const checks: [UnmirrorableRow['reason'], string, string][] = [
      [
        'other-tenant',
        `tenant_id <> $1`,
        table === 'telemetry' ? `coalesce(legacy_id::text, 'id ' || id)` : 'id',
      ],
    ];
    if (table === 'telemetry')
      checks.push(['no-legacy-id', `tenant_id = $1 AND legacy_id IS NULL`, `'id ' || id`]);
    for (const [reason, where, key] of checks) {
      const count = await ctx.v2.query<{ n: string }>(`SELECT count(*) AS n FROM ${from} WHERE ${where}`, [
        ctx.config.tenant.id,
      ]);
      const n = Number(count.rows[0].n);
      if (n === 0) continue;
      total += n;
      const listed = await ctx.v2.query<{ key: string; tenant: string }>(
        `SELECT ${key}::text AS key, tenant_id AS tenant FROM ${from} WHERE ${where} ORDER BY 1 LIMIT $2`,
        [ctx.config.tenant.id, Math.max(0, limit - rows.length)],
      );
      for (const r of listed.rows)
        rows.push({ table, key: r.key, reason, ...(reason === 'other-tenant' ? { tenant: r.tenant } : {}) });
    }
  }
  return { rows, total };
}

/** Where the rollback stands: whether writes are switched to V2, and since when checked. */
export async function rollbackWritesPlan(ctx: MigrationContext): Promise<{ switched: boolean }> {
  return { switched: (await writePrimaryOf(ctx)) === 'v2' };
}

export interface DrainResult {
  drained: boolean;
  /** Whether a repair queue was there to look at (none configured: nothing to wait for). */
  checked: boolean;
  waiting: number;
  inFlight: number;
  /** When the wait began (pass it back on the next check). */
  startedAt: string;
  waitedSeconds: number;
}

/**
 * One look at the repair queue for the rollback: drained when no message waits or is being
 * repaired. Past `maxWaitSeconds` since `startedAt` a queue that still holds messages stops the
 * rollback (RepairQueueNotDrainedError) unless forced. Refused once cleanup has stopped the
 * mirror, unless forced, as the rollback itself is.
 */
export async function drainRepairQueue(
  ctx: MigrationContext & { repairQueue?: QueueDepthPort },
  options: { startedAt?: string; maxWaitSeconds?: number; force?: boolean; reason?: string } = {},
): Promise<DrainResult> {
  await refuseAfterCleanup(ctx, options);
  const startedAt = options.startedAt ?? new Date().toISOString();
  const waitedSeconds = Math.round((Date.now() - Date.parse(startedAt)) / 1000);
  if (!ctx.repairQueue) {
    await auditEvent(ctx, 'rollback.repair-queue-unchecked', { reason: 'no repair queue is configured' });
    return { drained: true, checked: false, waiting: 0, inFlight: 0, startedAt, waitedSeconds };
  }
  const { waiting, inFlight } = await ctx.repairQueue.depth();
  const drained = waiting === 0 && inFlight === 0;
  if (!drained && waitedSeconds >= (options.maxWaitSeconds ?? DEFAULT_REPAIR_DRAIN_MAX_SECONDS)) {
    if (!options.force) {
      await auditEvent(ctx, 'rollback.refused', { reason: options.reason, waiting, inFlight, waitedSeconds });
      throw new RepairQueueNotDrainedError(waiting, inFlight, waitedSeconds);
    }
    await auditEvent(ctx, 'rollback.repair-queue-forced', { waiting, inFlight, waitedSeconds });
    return { drained: true, checked: true, waiting, inFlight, startedAt, waitedSeconds };
  }
  if (drained) await auditEvent(ctx, 'rollback.repair-queue-drained', { waitedSeconds });
  return { drained, checked: true, waiting, inFlight, startedAt, waitedSeconds };
}

async function refuseAfterCleanup(ctx: MigrationContext, options: { force?: boolean; reason?: string }) {
  const cleanup = await ctx.v2.query<{ dual_write_stopped_at: Date | null }>(
    `SELECT dual_write_stopped_at FROM ${controlSchema(ctx.config)}.cleanup_state WHERE id = 1`,
  );
  const stoppedAt = cleanup.rows[0]?.dual_write_stopped_at;
  if (stoppedAt && !options.force) {
    await auditEvent(ctx, 'rollback.refused', {
      reason: options.reason ?? null,
      dualWriteStoppedAt: stoppedAt.toISOString(),
    });
    throw new RollbackRefusedError(stoppedAt);
  }
}

export interface WritesCheck {
  /** Rows V1 cannot take (listed up to UNMIRRORABLE_ROWS_LISTED; all counted). */
  unmirrorable: { rows: UnmirrorableRow[]; total: number };
  verification: {
    runId: number;
    since: string;
    clean: boolean;
    repairedWindows: number;
    mismatchedWindows: number;
  };
}

/**
 * Before the writes go back to V1: rows V2 holds that V1 cannot take stop the rollback
 * (UnmirrorableRowsError, listing them) unless forced; then the windows touched since the
 * switch's own verification (in V1 and in V2) are checked, mismatched ones repaired from V2 (the
 * truth while V2 is primary) and checked again; what still differs stops the rollback
 * (VerificationFailedError) unless forced. Audited either way.
 */
export async function checkWritesForRollback(
  ctx: MigrationContext,
  options: { force?: boolean; reason?: string; recheckDelayMs?: number } = {},
): Promise<WritesCheck> {
  await refuseAfterCleanup(ctx, options);
  const unmirrorable = await unmirrorableRows(ctx);
  if (unmirrorable.total > 0) {
    await auditEvent(ctx, options.force ? 'rollback.unmirrorable-forced' : 'rollback.refused', {
      reason: options.reason ?? null,
      unmirrorable: unmirrorable.total,
      rows: unmirrorable.rows.slice(0, 10),
    });
    if (!options.force) throw new UnmirrorableRowsError(unmirrorable.rows, unmirrorable.total);
  }
  const status = await writeSwitchStatus(ctx);
  const since = new Date(status.verifiedSince ?? status.switchedAt ?? Date.now() - 3_600_000);
  let report: VerificationReport = await verifyTouchedWindows(ctx, since, {
    recheckDelayMs: options.recheckDelayMs,
    inV2: true,
  });
  const mismatchedWindows = report.mismatches.length;
  if (!report.clean) {
    report = await repairRunFromV2(ctx, report);
    await finishVerification(ctx, report);
  }
  const verification = {
    runId: report.runId,
    since: since.toISOString(),
    clean: report.clean,
    repairedWindows: report.repaired.filter((r) => r.clean).length,
    mismatchedWindows,
  };
  await auditEvent(ctx, 'rollback.writes-checked', { verification, unmirrorable: unmirrorable.total });
  if (!report.clean && !options.force) {
    const still = (await buildReport(ctx, report.runId)).mismatches;
    throw new VerificationFailedError(
      `V1 still differs from V2 after repair in ${still.length} window(s) and ${report.sample.differences.length} row(s); the writes stay on V2`,
      still.map((m) => ({ table: m.table, windowId: m.windowId, v1Rows: m.v1Rows, v2Rows: m.v2Rows })),
    );
  }
  return { unmirrorable, verification };
}

/** The writes back to V1 first (V2 mirrored from V1 again, dual-write stays on). Idempotent. */
export async function switchWritesBack(
  ctx: MigrationContext,
  options: { reason: string; force?: boolean },
): Promise<{ changed: boolean; primary: WritePrimary }> {
  await refuseAfterCleanup(ctx, options);
  const { changed } = await setParameter(
    ctx,
    'writePrimary',
    'v1',
    `rollback: ${options.reason} (writes back to V1 first; V2 follows it again)`,
  );
  await setParameter(ctx, 'dualWrite', 'on', `rollback: ${options.reason} (V1 stays the source of truth)`);
  if (changed)
    await auditEvent(ctx, 'writes.switched-back', { reason: options.reason, forced: Boolean(options.force) });
  return { changed, primary: 'v1' };
}
