import type { CutoverLevel } from './config';
import { controlSchema } from './db';
import { ConfirmationRequiredError, GuardRefusedError, RollbackRefusedError } from './errors';
import {
  assertCanStart,
  auditEvent,
  beginPhase,
  endPhase,
  failPhase,
  phaseStates,
  readParameter,
  setParameter,
  type MigrationContext,
} from './migration-state';
import { verifyTouchedWindows, type VerificationReport } from './verify';
import type { QueueDepthPort } from '../ports/queue';

/**
 * Phase 4 and rollback. The cutover steps the V2 traffic percentage through the schedule;
 * after each level's bake time the health gate checks the alarms and re-verifies the windows
 * touched since the last check; an unhealthy gate rolls back.
 */

export interface CutoverStatus {
  status: 'idle' | 'running' | 'held' | 'rolled-back' | 'complete';
  level: number;
  percentage: number;
  schedule: CutoverLevel[];
  reachedFullAt: string | null;
}

export async function cutoverStatus(ctx: MigrationContext): Promise<CutoverStatus> {
  const { rows } = await ctx.v2.query<{
    status: CutoverStatus['status'];
    level: number;
    percentage: number;
    schedule: CutoverLevel[];
    reached_full_at: Date | null;
  }>(
    `SELECT status, level, percentage, schedule, reached_full_at FROM ${controlSchema(ctx.config)}.cutover_state WHERE id = 1`,
  );
  const r = rows[0];
  if (!r)
    return {
      status: 'idle',
      level: -1,
      percentage: 0,
      schedule: ctx.config.cutover.schedule,
      reachedFullAt: null,
    };
  return {
    status: r.status,
    level: r.level,
    percentage: r.percentage,
    schedule: r.schedule,
    reachedFullAt: r.reached_full_at?.toISOString() ?? null,
  };
}

/**
 * The cutover's guards: every earlier phase done, dual-write on, and a passing verification
 * younger than the configured age (the latest finished run must be that one).
 */
export async function cutoverGuards(ctx: MigrationContext): Promise<string[]> {
  const reasons: string[] = [];
  if ((await readParameter(ctx, 'dualWrite')) !== 'on') reasons.push('dual-write is not on');
  const latest = await ctx.v2.query<{ id: string; status: string; finished_at: Date }>(
    `SELECT id, status, finished_at FROM ${controlSchema(ctx.config)}.verification_runs
      WHERE status <> 'running' AND scope = 'full' ORDER BY finished_at DESC LIMIT 1`,
  );
  const run = latest.rows[0];
  const maxAgeMs = ctx.config.cutover.maxVerificationAgeMinutes * 60_000;
  if (!run) reasons.push('no verification has run');
  else if (run.status !== 'passed') reasons.push(`the latest verification (run ${run.id}) failed`);
  else if (Date.now() - run.finished_at.getTime() > maxAgeMs) {
    reasons.push(
      `the latest passing verification (run ${run.id}, ${run.finished_at.toISOString()}) is older than ${ctx.config.cutover.maxVerificationAgeMinutes} minutes`,
    );
  }
  return reasons;
}

/** Begins Phase 4 (or resumes it after a rollback): checks order and guards, sets the schedule. */
export async function startCutover(ctx: MigrationContext): Promise<CutoverStatus> {
  const states = await phaseStates(ctx);
  const running = states.find((s) => s.phase === 'CUTOVER')?.status === 'running';
  const current = await cutoverStatus(ctx);
  if (running && (current.status === 'running' || current.status === 'held')) {
    // A cutover in progress (interrupted, stepped by ops, or held) carries on from its level;
    // each of its gates re-verifies what changed, so the start guards are not asked again. A
    // level already reached is gated again first (see takeRegate): traffic moves on only when healthy.
    const regate = current.status === 'running' && current.level >= 0;
    if (regate) {
      await ctx.v2.query(
        `UPDATE ${controlSchema(ctx.config)}.cutover_state SET regate_pending = true WHERE id = 1`,
      );
    }
    await auditEvent(ctx, 'cutover.continued', {
      level: current.level,
      percentage: current.percentage,
      ...(regate ? { healthGateFirst: true } : {}),
    });
    return current;
  }
  if (!running) await assertCanStart(ctx, 'CUTOVER');
  const reasons = await cutoverGuards(ctx);
  if (reasons.length > 0) throw new GuardRefusedError('Cutover', reasons);
  if (!running) await beginPhase(ctx, 'CUTOVER');
  const schedule = ctx.config.cutover.schedule;
  await ctx.v2.query(
    `INSERT INTO ${controlSchema(ctx.config)}.cutover_state (id, schedule, level, percentage, status, last_gate_at)
     VALUES (1, $1, -1, 0, 'running', now())
     ON CONFLICT (id) DO UPDATE SET schedule = EXCLUDED.schedule, status = 'running', level = -1, last_gate_at = now(), updated_at = now()`,
    [JSON.stringify(schedule)],
  );
  await auditEvent(ctx, 'cutover.started', { schedule });
  return cutoverStatus(ctx);
}

/**
 * Whether the next step of a continued cutover is a health gate at the level it reached (once:
 * the flag is cleared as it is taken).
 */
export async function takeRegate(ctx: MigrationContext): Promise<boolean> {
  const { rowCount } = await ctx.v2.query(
    `UPDATE ${controlSchema(ctx.config)}.cutover_state SET regate_pending = false WHERE id = 1 AND regate_pending`,
  );
  return (rowCount ?? 0) > 0;
}

/** Moves traffic to a level of the schedule (audited). Returns the level's bake time. */
export async function applyLevel(
  ctx: MigrationContext,
  level: number,
): Promise<{ percentage: number; bakeSeconds: number; last: boolean }> {
  const status = await cutoverStatus(ctx);
  if (status.status !== 'running')
    throw new GuardRefusedError('Cutover step', [`the cutover is ${status.status}`]);
  const target = status.schedule[level];
  if (!target) throw new GuardRefusedError('Cutover step', [`the schedule has no level ${level}`]);
  await setParameter(
    ctx,
    'trafficPercentage',
    String(target.percentage),
    `cutover level ${level + 1} of ${status.schedule.length}`,
  );
  await ctx.v2.query(
    `UPDATE ${controlSchema(ctx.config)}.cutover_state SET level = $1, percentage = $2, updated_at = now(),
            reached_full_at = CASE WHEN $2 = 100 THEN coalesce(reached_full_at, now()) ELSE reached_full_at END WHERE id = 1`,
    [level, target.percentage],
  );
  return {
    percentage: target.percentage,
    bakeSeconds: target.bakeSeconds,
    last: level === status.schedule.length - 1,
  };
}

export interface GateResult {
  healthy: boolean;
  alarms: { name: string; reason?: string }[];
  driftWindows: { table: string; windowId: number }[];
  reason: string | null;
}

/** How long the gate waits for the repair queue before it takes drift as real. */
export const DRIFT_REPAIR_WAIT_MS = 60_000;

/**
 * Waits for the repair queue to hold no failed V2 write (polling each second, at most
 * `maxWaitMs`): each is a row V2 is known to be behind on, which its repair will bring level.
 * 'empty' when it held none at the first look, 'drained' when it emptied, 'busy' when it still
 * held some at the end, 'none' when there is no queue to ask.
 */
export async function awaitRepairs(
  repairQueue: QueueDepthPort | undefined,
  maxWaitMs: number,
): Promise<'empty' | 'drained' | 'busy' | 'none'> {
  if (!repairQueue) return 'none';
  const pending = async () => {
    const { waiting, inFlight } = await repairQueue.depth();
    return waiting + inFlight;
  };
  if ((await pending()) === 0) return 'empty';
  const deadline = Date.now() + maxWaitMs;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    if ((await pending()) === 0) return 'drained';
  }
  return 'busy';
}

/**
 * Re-checks drift once more, unless the repair queue stayed busy past the wait: a row whose V2
 * half was still on its way at the first check may have timed out, been queued and repaired
 * since (so an empty queue proves nothing), or still wait in the queue (then the second check
 * comes once it has emptied). What differs at the second check is drift. Audits the second look.
 */
export async function recheckDrift(
  ctx: MigrationContext & { repairQueue?: QueueDepthPort },
  first: VerificationReport,
  again: () => Promise<VerificationReport>,
  audit: { action: string; repairWaitMs: number },
): Promise<VerificationReport> {
  if (first.clean) return first;
  const queue = await awaitRepairs(ctx.repairQueue, audit.repairWaitMs);
  if (queue === 'busy') return first;
  await auditEvent(ctx, audit.action, {
    reason:
      queue === 'drained'
        ? 'the repair queue held failed V2 writes; checked again once it was empty'
        : 'writes in flight at the first check may have landed or been repaired since; checked again',
    repairQueue: queue,
    firstRun: first.runId,
    windows: first.mismatches.map((m) => `${m.table}#${m.windowId}`),
  });
  return again();
}

/**
 * The health gate: alarms in ALARM, and drift in the windows touched since the last gate. Drift
 * is checked a second time (recheckDrift) after the repair queue has emptied (at most
 * DRIFT_REPAIR_WAIT_MS): a row whose write is in flight or whose repair is queued is behind, not
 * lost, and what still differs then is drift.
 */
export async function healthGate(
  ctx: MigrationContext & { repairQueue?: QueueDepthPort },
  options: { repairWaitMs?: number } = {},
): Promise<GateResult> {
  const firing = ctx.alarms ? await ctx.alarms.firing() : [];
  const last = await ctx.v2.query<{ last_gate_at: Date }>(
    `SELECT last_gate_at FROM ${controlSchema(ctx.config)}.cutover_state WHERE id = 1`,
  );
  const since = last.rows[0]?.last_gate_at ?? new Date(Date.now() - 3_600_000);
  const drift = await recheckDrift(
    ctx,
    await verifyTouchedWindows(ctx, since),
    () => verifyTouchedWindows(ctx, since),
    { action: 'gate.drift-rechecked', repairWaitMs: options.repairWaitMs ?? DRIFT_REPAIR_WAIT_MS },
  );
  await ctx.v2.query(
    `UPDATE ${controlSchema(ctx.config)}.cutover_state SET last_gate_at = now() WHERE id = 1`,
  );
  const alarms = firing.map((a) => ({ name: a.name, reason: a.reason }));
  const driftWindows = drift.mismatches.map((m) => ({ table: m.table, windowId: m.windowId }));
  const reason =
    alarms.length > 0
      ? `alarm:${alarms.map((a) => a.name).join(',')}`
      : driftWindows.length > 0
        ? `drift:${driftWindows.map((w) => `${w.table}#${w.windowId}`).join(',')}`
        : null;
  const result = { healthy: reason === null, alarms, driftWindows, reason };
  await auditEvent(ctx, 'gate.checked', { ...result, verificationRun: drift.runId });
  return result;
}

/** Closes Phase 4 once traffic is at 100 %. */
export async function completeCutover(ctx: MigrationContext): Promise<CutoverStatus> {
  const status = await cutoverStatus(ctx);
  if (status.percentage !== 100)
    throw new GuardRefusedError('Completing the cutover', [`traffic is at ${status.percentage} %`]);
  await ctx.v2.query(
    `UPDATE ${controlSchema(ctx.config)}.cutover_state SET status = 'complete', updated_at = now() WHERE id = 1`,
  );
  await endPhase(ctx, 'CUTOVER', { percentage: 100, reachedFullAt: status.reachedFullAt });
  return cutoverStatus(ctx);
}

/** Ops: hold the cutover where it is (the state machine waits), or resume it. */
export async function setCutoverHeld(ctx: MigrationContext, held: boolean): Promise<CutoverStatus> {
  const status = await cutoverStatus(ctx);
  const from = held ? 'running' : 'held';
  if (status.status !== from)
    throw new GuardRefusedError(held ? 'Hold' : 'Resume', [`the cutover is ${status.status}`]);
  await ctx.v2.query(
    `UPDATE ${controlSchema(ctx.config)}.cutover_state SET status = $1, updated_at = now() WHERE id = 1`,
    [held ? 'held' : 'running'],
  );
  await auditEvent(ctx, held ? 'cutover.held' : 'cutover.resumed', {
    level: status.level,
    percentage: status.percentage,
  });
  return cutoverStatus(ctx);
}

export interface RollbackResult {
  changed: boolean;
  from: number;
  to: number;
  levels: number[];
}

/** The words that, with `force`, roll reads back to a V1 that has missed writes since cleanup began. */
export const ROLLBACK_CONFIRMATION = 'ROLL BACK TO STALE V1';

export interface RollbackOptions {
  reason: string;
  force?: boolean;
  /** With `force` once dual-write has stopped: ROLLBACK_CONFIRMATION. */
  confirm?: string;
  /** Who asked, as they said (the alarm rule, `cli:<user>`); recorded beside the actor. */
  requestedBy?: string;
}

/**
 * Whether a rollback may go ahead once cleanup has begun (RollbackRefusedError or
 * ConfirmationRequiredError otherwise; nothing changed, the refusal audited). Before cleanup it
 * always may. Once cleanup has stopped dual-write, V1 has missed every write since: only `force`
 * with ROLLBACK_CONFIRMATION sends reads back to it. Once V1's tables are renamed, no rollback
 * can send reads there, forced or not.
 */
export async function rollbackGuards(ctx: MigrationContext, options: RollbackOptions): Promise<Date | null> {
  const cleanup = await ctx.v2.query<{ dual_write_stopped_at: Date | null; renamed_at: Date | null }>(
    `SELECT dual_write_stopped_at, renamed_at FROM ${controlSchema(ctx.config)}.cleanup_state WHERE id = 1`,
  );
  const stoppedAt = cleanup.rows[0]?.dual_write_stopped_at ?? null;
  const renamedAt = cleanup.rows[0]?.renamed_at ?? null;
  if (!stoppedAt) return null;
  const refuse = async (error: Error) => {
    await auditEvent(ctx, 'rollback.refused', {
      reason: options.reason,
      ...(options.requestedBy ? { requestedBy: options.requestedBy } : {}),
      forced: Boolean(options.force),
      dualWriteStoppedAt: stoppedAt.toISOString(),
      ...(renamedAt ? { renamedAt: renamedAt.toISOString() } : {}),
    });
    throw error;
  };
  if (renamedAt || !options.force) await refuse(new RollbackRefusedError(stoppedAt, renamedAt ?? undefined));
  if (options.confirm !== ROLLBACK_CONFIRMATION) {
    await refuse(
      new ConfirmationRequiredError(
        'A forced rollback',
        `sends V2 read traffic back to V1, which has missed every write since dual-write stopped at ${stoppedAt.toISOString()}: reads will not see those writes`,
        ROLLBACK_CONFIRMATION,
        'start the Rollback state machine with "force": true',
      ),
    );
  }
  return stoppedAt;
}

/**
 * Traffic back to 0 % (straight, or down through the schedule's lower levels), dual-write left
 * on, why and who recorded (the actor is the acting execution; who asked goes beside it).
 * Idempotent. Refused once cleanup has begun, unless forced and confirmed (rollbackGuards).
 */
export async function rollback(ctx: MigrationContext, options: RollbackOptions): Promise<RollbackResult> {
  const stoppedAt = await rollbackGuards(ctx, options);
  // Reads go back to V1 only once the writes are back on V1 (the Rollback state machine does
  // that first): V1 is then the source of truth again.
  if (!stoppedAt && (await readParameter(ctx, 'writePrimary')) === 'v2' && !options.force) {
    await auditEvent(ctx, 'rollback.refused', {
      reason: options.reason,
      ...(options.requestedBy ? { requestedBy: options.requestedBy } : {}),
      writePrimary: 'v2',
    });
    throw new GuardRefusedError('Rolling the reads back', [
      'writes are still on V2: roll them back to V1 first (the Rollback state machine does)',
    ]);
  }
  const current = Number((await readParameter(ctx, 'trafficPercentage')) ?? '0') || 0;
  const status = await cutoverStatus(ctx);
  const levels =
    ctx.config.cutover.rollbackMode === 'stepwise'
      ? [
          ...status.schedule
            .map((l) => l.percentage)
            .filter((p) => p < current)
            .reverse(),
          0,
        ]
      : [0];
  let changed = false;
  for (const level of current === 0 ? [] : levels) {
    changed =
      (await setParameter(ctx, 'trafficPercentage', String(level), `rollback: ${options.reason}`)).changed ||
      changed;
  }
  if (!stoppedAt)
    await setParameter(ctx, 'dualWrite', 'on', `rollback: ${options.reason} (V1 stays the source of truth)`);
  await ctx.v2.query(
    `UPDATE ${controlSchema(ctx.config)}.cutover_state SET status = 'rolled-back', percentage = 0, level = -1, updated_at = now() WHERE id = 1`,
  );
  // A cutover in progress ends here; a later run of the Cutover state machine starts it anew.
  if ((await phaseStates(ctx)).find((s) => s.phase === 'CUTOVER')?.status === 'running') {
    await failPhase(ctx, 'CUTOVER', `RolledBack: ${options.reason}`);
  }
  await auditEvent(ctx, 'rollback.done', {
    reason: options.reason,
    ...(options.requestedBy ? { requestedBy: options.requestedBy } : {}),
    from: current,
    to: 0,
    changed,
    forced: Boolean(options.force),
  });
  return { changed, from: current, to: 0, levels: current === 0 ? [] : levels };
}

/**
 * The whole schedule in-process (tests and the simplest local use; the rehearsal runs the
 * Cutover state machine instead): each level, its bake time, the gate; unhealthy → rollback.
 */
export async function runCutoverLocally(
  ctx: MigrationContext,
  options: { sleep?: (ms: number) => Promise<void>; bakeScale?: number } = {},
): Promise<{ outcome: 'complete' | 'rolled-back'; gate?: GateResult; percentage: number }> {
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const { schedule } = await startCutover(ctx);
  for (let level = 0; level < schedule.length; level++) {
    const { bakeSeconds, percentage } = await applyLevel(ctx, level);
    await sleep(bakeSeconds * 1000 * (options.bakeScale ?? 1));
    const gate = await healthGate(ctx);
    if (!gate.healthy) {
      await rollback(
        { ...ctx, actor: gate.reason ?? ctx.actor },
        { reason: `health gate at ${percentage} %: ${gate.reason}` },
      );
      return { outcome: 'rolled-back', gate, percentage: 0 };
    }
  }
  await completeCutover(ctx);
  return { outcome: 'complete', percentage: 100 };
}
