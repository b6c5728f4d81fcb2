import { controlSchema } from './db';
import { GuardRefusedError } from './errors';
import {
  assertLockHeld,
  nextPhase,
  phaseStates,
  readParameter,
  type MigrationContext,
  type Phase,
} from './migration-state';

/**
 * The guards every state-machine task that changes the migration checks itself, before it acts:
 * the caller holds the migration lock, and the migration is at the step the task belongs to.
 * The state machines call the tasks in the right order anyway; these checks are what stops a
 * task invoked directly (anyone with lambda:InvokeFunction on the orchestrator), out of order,
 * with a valid-looking event: it is refused with a named error and nothing is changed.
 *
 * Tasks that take the lock themselves (begin, start-cutover, step) check their guards as they
 * start (assertCanStart, cutoverGuards, cleanupGuards). Three tasks take no lock by design, so
 * that they work while a run holds it: rollback (never waits; guarded in cutover.ts), hold and
 * resume (guarded below by the cutover being under way). Reads (status, next-phase,
 * archive-status) and the lock's own release change nothing of the migration.
 */

/** Which step each guarded task belongs to. */
type TaskStep =
  | { lock: true; next: Phase }
  | { lock: true; running: Phase }
  | { lock: true; cutoverActive: true }
  | { lock: true }
  | { lock: false; cutoverActive: true };

/** Every task that changes state and is not guarded where it takes the lock. */
export const GUARDED_TASKS: Readonly<Record<string, TaskStep>> = {
  prepare: { lock: true, next: 'PREPARE' },
  'start-backfill': { lock: true, next: 'BACKFILL' },
  'poll-backfill': { lock: true, running: 'BACKFILL' },
  'start-verify': { lock: true, next: 'VERIFY' },
  'poll-verify': { lock: true, running: 'VERIFY' },
  'start-cleanup': { lock: true, next: 'CLEANUP' },
  'finish-cleanup': { lock: true, running: 'CLEANUP' },
  'cutover-next': { lock: true, cutoverActive: true },
  'health-gate': { lock: true, cutoverActive: true },
  'complete-cutover': { lock: true, cutoverActive: true },
  'drop-archives': { lock: true },
  hold: { lock: false, cutoverActive: true },
  resume: { lock: false, cutoverActive: true },
};

/**
 * Checks the guards of `task` (see GUARDED_TASKS): LockNotHeldError when the caller does not
 * hold the lock, GuardRefusedError naming what is wrong when the migration is not at the task's
 * step. A task without guards here passes.
 */
export async function guardTask(ctx: MigrationContext, task: string): Promise<void> {
  const step = GUARDED_TASKS[task];
  if (!step) return;
  if (step.lock) await assertLockHeld(ctx, task);
  const reasons: string[] = [];
  if ('next' in step) {
    const next = await nextPhase(ctx);
    if (next !== step.next)
      reasons.push(next ? `the next phase is ${next}, not ${step.next}` : 'every phase is done');
  }
  if ('running' in step) {
    const state = (await phaseStates(ctx)).find((s) => s.phase === step.running);
    if (state?.status !== 'running')
      reasons.push(`Phase ${step.running} is ${state?.status ?? 'pending'}, not running`);
  }
  if ('cutoverActive' in step) reasons.push(...(await cutoverActiveReasons(ctx, task)));
  if (reasons.length > 0) throw new GuardRefusedError(`The ${task} task`, reasons);
}

/** What stops a task of a cutover under way: the phase not running, cleanup begun, dual-write off. */
async function cutoverActiveReasons(ctx: MigrationContext, task: string): Promise<string[]> {
  const reasons: string[] = [];
  const states = await phaseStates(ctx);
  const cutover = states.find((s) => s.phase === 'CUTOVER')?.status ?? 'pending';
  if (cutover !== 'running') reasons.push(`Phase CUTOVER is ${cutover}, not running`);
  if (states.find((s) => s.phase === 'CLEANUP')?.status !== 'pending') reasons.push('cleanup has started');
  // Moving traffic needs V1 kept current: the guard the cutover started under, checked again.
  if (task === 'cutover-next' && (await readParameter(ctx, 'dualWrite')) !== 'on')
    reasons.push('dual-write is not on');
  return reasons;
}

/**
 * The verification run a poll names must be the current one of Phase 3: the latest full run,
 * still running (a stale or invented run id would conclude, and repair, the wrong run).
 */
export async function assertCurrentVerificationRun(ctx: MigrationContext, runId: number): Promise<void> {
  const { rows } = await ctx.v2.query<{ id: string; status: string }>(
    `SELECT id, status FROM ${controlSchema(ctx.config)}.verification_runs WHERE scope = 'full' ORDER BY id DESC LIMIT 1`,
  );
  const latest = rows[0];
  if (!latest || Number(latest.id) !== runId || latest.status !== 'running') {
    throw new GuardRefusedError('The poll-verify task', [
      latest
        ? `run ${runId} is not the verification under way (the latest full run is ${latest.id}, ${latest.status})`
        : 'no verification has started',
    ]);
  }
}
