import type { Pool, PoolClient } from 'pg';
import type { MigrationConfig } from './config';
import { controlSchema, withTransaction } from './db';
import { LockNotHeldError, MigrationLockedError, PhaseOrderError } from './errors';
import { migrate, projectMigrationSets } from './migrator';
import { parameterNames, type ParameterPort } from '../ports/parameters';
import type { AlarmPort } from '../ports/alarms';
import type { BackupPort } from '../ports/backup';
import type { ExecutionsPort } from '../ports/executions';

/** The five phases, in the only order they may run. */
export const PHASES = ['PREPARE', 'BACKFILL', 'VERIFY', 'CUTOVER', 'CLEANUP'] as const;
export type Phase = (typeof PHASES)[number];

/** What every phase, guard and rollback works with; `actor` says who or what acts. */
export interface MigrationContext {
  /** V1, read by everything (on AWS with a read-only role's secret). */
  v1: Pool;
  /**
   * V1 as a role that owns its tables: the only writes to V1 (cleanup's rename, the archives'
   * drop) go through it. Without it they go through `v1`, whose role must then own the tables.
   */
  v1Owner?: Pool;
  v2: Pool;
  config: MigrationConfig;
  parameters: ParameterPort;
  alarms?: AlarmPort;
  backup?: BackupPort;
  /** Tells whether the lock's holder still runs (a dead holder's lock is taken over). */
  executions?: ExecutionsPort;
  /** `execution:<arn>`, `alarm:<name>`, `person:<name>`, `rehearsal`… */
  actor: string;
}

/** Records one change in the audit log, with who or what triggered it. */
export async function auditEvent(
  // A pool, or the client of a transaction the event belongs to.
  ctx: Pick<MigrationContext, 'config' | 'actor'> & { v2: Pool | PoolClient },
  action: string,
  details: Record<string, unknown> = {},
): Promise<void> {
  await ctx.v2.query(
    `INSERT INTO ${controlSchema(ctx.config)}.audit_log (actor, action, details) VALUES ($1, $2, $3)`,
    [ctx.actor, action, JSON.stringify(details)],
  );
}

/** Sets a runtime parameter and audits the change (from, to, why). No-op when unchanged. */
export async function setParameter(
  ctx: MigrationContext,
  which: keyof ReturnType<typeof parameterNames>,
  value: string,
  why: string,
): Promise<{ changed: boolean; from: string | undefined }> {
  const name = parameterNames(ctx.config.ssmPrefix)[which];
  const from = await ctx.parameters.get(name);
  if (from === value) return { changed: false, from };
  await ctx.parameters.put(name, value);
  await auditEvent(ctx, 'parameter.set', { name, from: from ?? null, to: value, why });
  return { changed: true, from };
}

export async function readParameter(
  ctx: MigrationContext,
  which: keyof ReturnType<typeof parameterNames>,
): Promise<string | undefined> {
  return ctx.parameters.get(parameterNames(ctx.config.ssmPrefix)[which]);
}

/**
 * Takes the migration lock for `ctx.actor` (re-entrant for the same actor). A holder that has
 * ended (its execution ABORTED, FAILED, TIMED_OUT or SUCCEEDED, its local process gone) is taken
 * over at once, audited as `lock.taken-over`; a live holder, or one nobody can tell about, makes a
 * second run fail at once with MigrationLockedError until the lock's time to live has passed.
 */
export async function acquireLock(ctx: MigrationContext): Promise<void> {
  await ensureControlSchema(ctx);
  const { rows } = await ctx.v2.query(
    `UPDATE ${controlSchema(ctx.config)}.migration_lock
        SET holder = $1, acquired_at = CASE WHEN holder = $1 THEN acquired_at ELSE now() END,
            expires_at = now() + make_interval(mins => $2)
      WHERE id = 1 AND (holder IS NULL OR holder = $1 OR expires_at < now())
      RETURNING holder`,
    [ctx.actor, ctx.config.lockTtlMinutes],
  );
  if (rows.length === 0) await takeOverFromDeadHolder(ctx);
}

/** Takes the lock from a holder that no longer runs, or throws MigrationLockedError. */
async function takeOverFromDeadHolder(ctx: MigrationContext): Promise<void> {
  const ctl = controlSchema(ctx.config);
  const held = await ctx.v2.query<{ holder: string | null; acquired_at: Date }>(
    `SELECT holder, acquired_at FROM ${ctl}.migration_lock WHERE id = 1`,
  );
  const { holder, acquired_at: since } = held.rows[0];
  // Released between the two statements: try again.
  if (holder === null) return acquireLock(ctx);
  const state = ctx.executions ? await ctx.executions.holderState(holder) : undefined;
  if (state?.alive === false) {
    // Only if the same dead holder still has it: two runs taking over at once, one wins.
    const taken = await ctx.v2.query(
      `UPDATE ${ctl}.migration_lock SET holder = $1, acquired_at = now(), expires_at = now() + make_interval(mins => $3)
        WHERE id = 1 AND holder = $2 RETURNING holder`,
      [ctx.actor, holder, ctx.config.lockTtlMinutes],
    );
    if (taken.rows.length > 0) {
      await auditEvent(ctx, 'lock.taken-over', {
        from: holder,
        holderStatus: state.status,
        heldSince: since.toISOString(),
      });
      return;
    }
  }
  throw new MigrationLockedError(holder, since, ctx.actor, state?.status);
}

/** Who holds the migration lock now (null when nobody does, or before the control schema exists). */
export async function lockHolder(ctx: Pick<MigrationContext, 'v2' | 'config'>): Promise<string | null> {
  const exists = await ctx.v2.query<{ t: string | null }>('SELECT to_regclass($1) AS t', [
    `${ctx.config.schemas.control}.migration_lock`,
  ]);
  if (!exists.rows[0].t) return null;
  const { rows } = await ctx.v2.query<{ holder: string | null }>(
    `SELECT holder FROM ${controlSchema(ctx.config)}.migration_lock WHERE id = 1`,
  );
  return rows[0]?.holder ?? null;
}

/**
 * Refuses a task (LockNotHeldError, nothing changed) unless `ctx.actor` holds the migration lock:
 * every task that changes the migration checks this itself, so invoking it directly, outside
 * the run that took the lock, changes nothing.
 */
export async function assertLockHeld(ctx: MigrationContext, task: string): Promise<void> {
  const holder = await lockHolder(ctx);
  if (holder !== ctx.actor) throw new LockNotHeldError(task, ctx.actor, holder);
}

/** Releases the lock if `ctx.actor` holds it; says whether it did. */
export async function releaseLock(ctx: MigrationContext): Promise<boolean> {
  const { rowCount } = await ctx.v2.query(
    `UPDATE ${controlSchema(ctx.config)}.migration_lock SET holder = NULL, acquired_at = NULL, expires_at = NULL WHERE id = 1 AND holder = $1`,
    [ctx.actor],
  );
  return (rowCount ?? 0) > 0;
}

export interface PhaseState {
  phase: Phase;
  status: 'pending' | 'running' | 'done' | 'failed';
  startedAt?: string;
  finishedAt?: string;
  error?: string;
}

/**
 * Deploys the control schema (the migration's own state) when it is missing or behind. It
 * holds no V2 data, so it may exist before Phase 1 has run.
 */
export async function ensureControlSchema(ctx: Pick<MigrationContext, 'v2' | 'config'>): Promise<void> {
  const [controlSet] = projectMigrationSets(ctx.config.schemas);
  await migrate(ctx.v2, ctx.config.schemas.control, controlSet);
}

/** The latest run of each phase (all pending before the control schema exists). */
export async function phaseStates(ctx: MigrationContext): Promise<PhaseState[]> {
  const exists = await ctx.v2.query<{ t: string | null }>('SELECT to_regclass($1) AS t', [
    `${ctx.config.schemas.control}.phase_runs`,
  ]);
  if (!exists.rows[0].t) return PHASES.map((phase) => ({ phase, status: 'pending' }));
  const { rows } = await ctx.v2.query<{
    phase: Phase;
    status: PhaseState['status'];
    started_at: Date;
    finished_at: Date | null;
    error: string | null;
  }>(
    `SELECT DISTINCT ON (phase) phase, status, started_at, finished_at, error
       FROM ${controlSchema(ctx.config)}.phase_runs ORDER BY phase, started_at DESC, id DESC`,
  );
  const latest = new Map(rows.map((r) => [r.phase, r]));
  return PHASES.map((phase) => {
    const r = latest.get(phase);
    return r
      ? {
          phase,
          status: r.status,
          startedAt: r.started_at.toISOString(),
          finishedAt: r.finished_at?.toISOString(),
          ...(r.error ? { error: r.error } : {}),
        }
      : { phase, status: 'pending' };
  });
}

/** Whether a phase may start: every phase before it is done, and cleanup has not finished. */
export async function assertCanStart(ctx: MigrationContext, phase: Phase): Promise<void> {
  const states = await phaseStates(ctx);
  const before = states.slice(0, PHASES.indexOf(phase));
  const missing = before.filter((s) => s.status !== 'done').map((s) => s.phase);
  if (missing.length > 0) throw new PhaseOrderError(phase, missing);
  const cleanup = states.find((s) => s.phase === 'CLEANUP');
  if (phase !== 'CLEANUP' && cleanup?.status !== 'pending') {
    throw new PhaseOrderError(
      phase,
      [],
      `Phase ${phase} cannot run: cleanup has started, the migration is over`,
    );
  }
}

/** The first phase that is not done, or null when all are. */
export async function nextPhase(ctx: MigrationContext): Promise<Phase | null> {
  return (await phaseStates(ctx)).find((s) => s.status !== 'done')?.phase ?? null;
}

/**
 * Starts a phase run after its order check (the caller holds the lock). A phase whose latest
 * run is still `running` was interrupted (a process killed, an execution stopped): it is resumed,
 * not started again (audited as `phase.resumed`), and the caller carries on from its durable
 * state. Returns which of the two happened.
 */
export async function beginPhase(ctx: MigrationContext, phase: Phase): Promise<'started' | 'resumed'> {
  await assertCanStart(ctx, phase);
  await ensureControlSchema(ctx);
  const current = (await phaseStates(ctx)).find((s) => s.phase === phase);
  if (current?.status === 'running') {
    await auditEvent(ctx, 'phase.resumed', { phase, startedAt: current.startedAt });
    return 'resumed';
  }
  // The run, the state and the audit event in one transaction: a process killed in between
  // leaves either all three or none (a phase running without its phase.started event before).
  await withTransaction(ctx.v2, async (client) => {
    await client.query(
      `INSERT INTO ${controlSchema(ctx.config)}.phase_runs (phase, status, actor) VALUES ($1, 'running', $2)`,
      [phase, ctx.actor],
    );
    await client.query(
      `UPDATE ${controlSchema(ctx.config)}.migration_state SET phase = $1, status = 'running', updated_at = now() WHERE id = 1`,
      [phase],
    );
    await auditEvent({ ...ctx, v2: client }, 'phase.started', { phase });
  });
  return 'started';
}

async function closePhase(
  ctx: MigrationContext,
  phase: Phase,
  status: 'done' | 'failed',
  result: unknown,
  error?: string,
) {
  // As beginPhase: all three, or none.
  await withTransaction(ctx.v2, async (client) => {
    await client.query(
      `UPDATE ${controlSchema(ctx.config)}.phase_runs SET status = $2, finished_at = now(), result = $3, error = $4
        WHERE id = (SELECT id FROM ${controlSchema(ctx.config)}.phase_runs WHERE phase = $1 ORDER BY started_at DESC, id DESC LIMIT 1)`,
      [phase, status, JSON.stringify(result ?? null), error ?? null],
    );
    await client.query(
      `UPDATE ${controlSchema(ctx.config)}.migration_state SET status = $1, updated_at = now() WHERE id = 1`,
      [status],
    );
    await auditEvent({ ...ctx, v2: client }, `phase.${status}`, { phase, ...(error ? { error } : {}) });
  });
}

export const endPhase = (ctx: MigrationContext, phase: Phase, result?: unknown) =>
  closePhase(ctx, phase, 'done', result);
export const failPhase = (ctx: MigrationContext, phase: Phase, error: string) =>
  closePhase(ctx, phase, 'failed', null, error);
