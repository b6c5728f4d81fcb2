import { z } from 'zod';
import { describeIssues } from './config';
import { asRetryable } from './db';
import { InvalidInputError, MigrationError } from './errors';
import { migrationStatus } from './checklist';
import { dropArchives, finishCleanup, startCleanup } from './cleanup';
import {
  applyLevel,
  completeCutover,
  cutoverStatus,
  healthGate,
  rollback,
  rollbackGuards,
  setCutoverHeld,
  startCutover,
  takeRegate,
} from './cutover';
import {
  acquireLock,
  auditEvent,
  ensureControlSchema,
  nextPhase,
  PHASES,
  phaseStates,
  releaseLock,
  type MigrationContext,
  type Phase,
} from './migration-state';
import { pollBackfill, pollVerify, prepareStep, startBackfill, startVerify } from './phases';
import { changeControl, parseControlChange } from './backfill/throttle';
import { redriveWindows } from './backfill/redrive';
import { assertCurrentVerificationRun, guardTask } from './task-guards';
import {
  checkWritesForRollback,
  drainRepairQueue,
  rollbackWritesPlan,
  switchWrites,
  switchWritesBack,
} from './write-switch';
import type { DeadLetterPort, QueueDepthPort, QueuePort } from '../ports/queue';

/**
 * The tasks of the three state machines, dispatched by name: the orchestrator Lambda calls
 * `orchestrate` with its event, and the local rehearsal calls it with the same events, so the
 * flow ops run is the flow that was tested. Every input from outside is validated here.
 */

export interface OrchestratorDeps extends Omit<MigrationContext, 'actor'> {
  queue: QueuePort;
  /** The dual writes' repair queue, whose depth the rollback from the write switch waits on. */
  repairQueue?: QueueDepthPort;
  /** Publishes a metric (CloudWatch through Powertools on AWS; nothing or a log locally). */
  metric?: (name: string, value: number) => void;
  /** The worker queue's DLQ, which `redrive` reads the failed windows' messages from. */
  deadLetters?: DeadLetterPort;
}

const phase = z.preprocess((v) => (typeof v === 'string' ? v.toUpperCase() : v), z.enum(PHASES));

/** Confirmation words of a destructive step (see cleanup.ts: RENAME_CONFIRMATION, DROP_CONFIRMATION). */
const confirm = z.string().max(100);

/**
 * Start-execution input of the Migration state machine. `confirm` is what cleanup's rename
 * needs (`RENAME V1 TABLES`); `drop-archives` needs `DROP V1 ARCHIVES`.
 */
export const migrationInputSchema = z.discriminatedUnion('action', [
  z.object({ action: z.literal('advance'), through: phase.optional(), confirm: confirm.optional() }).strict(),
  z.object({ action: z.literal('status') }).strict(),
  // The backfill control (`migrate throttle`): the rest of the input is a control change.
  z.object({ action: z.literal('throttle') }).passthrough(),
  z.object({ action: z.literal('drop-archives'), confirm }).strict(),
  // Failed backfill windows back to the workers (`migrate redrive`), see backfill/redrive.ts.
  z.object({ action: z.literal('redrive') }).strict(),
]);

/** Start-execution input of the Cutover state machine. */
export const cutoverInputSchema = z
  .object({ action: z.enum(['run', 'step', 'hold', 'resume', 'switch-writes']).default('run') })
  .strict();

/**
 * Start-execution input of the Rollback state machine (from ops, or from the alarm rule).
 * `actor` is who asked, as they say (recorded as `requestedBy`; the audit log's actor is the
 * execution); `force` with `confirm` (ROLLBACK_CONFIRMATION) rolls back after dual-write stopped.
 */
export const rollbackInputSchema = z
  .object({
    reason: z.string().trim().min(1, 'say why').max(500),
    actor: z.string().trim().min(1).max(200).optional(),
    force: z.boolean().optional(),
    confirm: confirm.optional(),
  })
  .strict();

function validate<S extends z.ZodType>(what: string, schema: S, input: unknown): z.infer<S> {
  const result = schema.safeParse(input ?? {});
  if (!result.success) throw new InvalidInputError(what, describeIssues(result.error));
  return result.data;
}

/**
 * The acting execution: the state machines pass `$$.Execution.Id`, and the audit log records
 * it, so it must be an execution ARN (`arn:<partition>:states:<region>:<account>:execution:<machine>:<name>`).
 */
export const EXECUTION_ARN = /^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:execution:[^:\s]{1,80}:[^:\s]{1,80}$/;
const actor = z
  .string()
  .max(2048)
  .regex(EXECUTION_ARN, 'must be the acting Step Functions execution ARN ($$.Execution.Id)');
/** A destructive step's request: its confirmation words (absent ones are refused by name). */
const confirmedRequest = z.object({ confirm: z.string().max(100).optional() }).passthrough();
const archive = z
  .object({
    id: z.string(),
    kind: z.enum(['rds-snapshot', 'aurora-snapshot', 'pg_dump', 'export']),
    location: z.string(),
  })
  .strict();

const rollbackRequest = z
  .object({
    reason: z.string().min(1),
    actor: z.string().optional(),
    force: z.boolean().optional(),
    confirm: z.string().optional(),
  })
  .passthrough();

/** The tasks of the write switch (Cutover) and of the rollback from it (Rollback). */
const writeSwitchTasks = [
  z.object({ task: z.literal('switch-writes'), actor }),
  z.object({ task: z.literal('rollback-writes-plan'), actor, request: rollbackRequest }),
  z.object({
    task: z.literal('drain-repair-queue'),
    actor,
    request: rollbackRequest,
    drain: z.object({ startedAt: z.iso.datetime().optional() }).passthrough(),
  }),
  z.object({ task: z.literal('check-writes'), actor, request: rollbackRequest }),
  z.object({ task: z.literal('switch-writes-back'), actor, request: rollbackRequest }),
] as const;

/** Every task event the state machines send. */
export const taskEventSchema = z.discriminatedUnion('task', [
  z.object({ task: z.literal('validate-migration-input'), input: z.unknown() }),
  z.object({ task: z.literal('validate-cutover-input'), input: z.unknown() }),
  z.object({ task: z.literal('validate-rollback-input'), input: z.unknown() }),
  z.object({ task: z.literal('status'), actor }),
  z.object({ task: z.literal('throttle'), actor, request: z.object({}).passthrough() }),
  z.object({ task: z.literal('redrive'), actor }),
  z.object({
    task: z.literal('begin'),
    actor,
    request: z.object({ through: phase.optional() }).passthrough(),
  }),
  z.object({ task: z.literal('next-phase'), actor, target: phase }),
  z.object({ task: z.literal('prepare'), actor }),
  z.object({ task: z.literal('start-backfill'), actor }),
  z.object({ task: z.literal('poll-backfill'), actor }),
  z.object({ task: z.literal('start-verify'), actor }),
  z.object({ task: z.literal('poll-verify'), actor, runId: z.number().int().positive() }),
  z.object({ task: z.literal('start-cleanup'), actor, request: confirmedRequest.optional() }),
  z.object({ task: z.literal('archive-status'), actor, archive }),
  z.object({ task: z.literal('finish-cleanup'), actor, archive, request: confirmedRequest.optional() }),
  z.object({ task: z.literal('drop-archives'), actor, request: confirmedRequest.optional() }),
  z.object({ task: z.literal('release'), actor }),
  // From the EventBridge rule on Step Functions "Execution Status Change" (ABORTED, TIMED_OUT,
  // FAILED): `actor` is the execution that ended, which no Catch may have recorded.
  z.object({
    task: z.literal('execution-ended'),
    actor,
    status: z.enum(['ABORTED', 'TIMED_OUT', 'FAILED', 'SUCCEEDED']),
    stateMachineArn: z.string().min(1).max(2048).optional(),
  }),
  z.object({
    task: z.literal('record-failure'),
    actor,
    error: z.object({ Error: z.string(), Cause: z.string().optional() }).passthrough(),
  }),
  z.object({ task: z.literal('start-cutover'), actor }),
  z.object({ task: z.literal('cutover-next'), actor }),
  z.object({ task: z.literal('health-gate'), actor }),
  z.object({ task: z.literal('complete-cutover'), actor }),
  z.object({ task: z.literal('hold'), actor }),
  z.object({ task: z.literal('resume'), actor }),
  z.object({ task: z.literal('step'), actor }),
  z.object({
    task: z.literal('rollback'),
    actor,
    request: rollbackRequest,
  }),
  ...writeSwitchTasks,
]);
/** Lambda reports a thrown error's Cause as JSON {errorType, errorMessage}; locally it is the message. */
function causeMessage(cause: string | undefined): string {
  if (!cause) return '';
  try {
    const parsed = JSON.parse(cause) as { errorMessage?: string };
    return parsed.errorMessage ?? cause;
  } catch {
    return cause;
  }
}

/**
 * Runs one orchestrator task. A connection failure or other transient database error leaves it
 * as a TransientDatabaseError, which the state machines retry (RETRYABLE_ERRORS); a task is
 * safe to run again (each step checks what is already done).
 */
export async function orchestrate(
  deps: OrchestratorDeps,
  rawEvent: unknown,
): Promise<Record<string, unknown>> {
  try {
    return await runTask(deps, rawEvent);
  } catch (error) {
    throw asRetryable(error);
  }
}

async function runTask(deps: OrchestratorDeps, rawEvent: unknown): Promise<Record<string, unknown>> {
  const event = validate('orchestrator task', taskEventSchema, rawEvent);
  if (event.task === 'validate-migration-input') {
    const request = validate('Migration input', migrationInputSchema, event.input);
    if (request.action !== 'throttle') return request;
    const { action, ...change } = request;
    return { action, ...parseControlChange(change) };
  }
  if (event.task === 'validate-cutover-input')
    return validate('Cutover input', cutoverInputSchema, event.input);
  if (event.task === 'validate-rollback-input')
    return validate('Rollback input', rollbackInputSchema, event.input);
  const ctx: MigrationContext & { queue: QueuePort } = { ...deps, actor: event.actor };
  // A task that changes the migration checks its own guards first (task-guards.ts).
  await guardTask(ctx, event.task);

  switch (event.task) {
    case 'status':
      return { ...(await migrationStatus(ctx)) };
    case 'throttle': {
      // No lock: ops must be able to pause or slow the workers while a phase runs.
      const { action: _action, ...change } = event.request;
      await ensureControlSchema(ctx);
      const control = await changeControl(ctx, parseControlChange(change));
      deps.metric?.('BackfillThrottled', control.state === 'running' ? 0 : 1);
      return { ...control };
    }
    case 'redrive': {
      // No lock, as the throttle: it works while a run waits on the failed windows.
      const result = await redriveWindows(ctx);
      deps.metric?.('BackfillWindowsRedriven', result.redriven.length + result.resetToPending.length);
      return { ...result };
    }
    case 'begin': {
      await acquireLock(ctx);
      const target = event.request.through ?? (await nextPhase(ctx)) ?? 'CLEANUP';
      await auditEvent(ctx, 'execution.started', { target });
      return { target };
    }
    case 'next-phase': {
      const states = await phaseStates(ctx);
      const targetDone = states.find((s) => s.phase === event.target)?.status === 'done';
      const next = states.find((s) => s.status !== 'done')?.phase ?? null;
      const reached = targetDone || next === null || PHASES.indexOf(next) > PHASES.indexOf(event.target);
      return { phase: reached ? 'DONE' : (next as Phase) };
    }
    case 'prepare': {
      const report = await prepareStep(ctx);
      return {
        steps: report.steps.map((s) => `${s.step}: ${s.outcome} (${s.detail})`),
        storage: report.storage.kind,
      };
    }
    case 'start-backfill':
    case 'poll-backfill': {
      const p = event.task === 'start-backfill' ? await startBackfill(ctx) : await pollBackfill(ctx);
      deps.metric?.('BackfillWindowsDone', p.windowsDone);
      // 1 while the workers are held back (paused, under a ceiling, V1 under pressure).
      deps.metric?.('BackfillThrottled', p.throttle.state === 'running' ? 0 : 1);
      return {
        complete: p.complete,
        windowsTotal: p.windowsTotal,
        windowsDone: p.windowsDone,
        windowsFailed: p.windowsFailed,
        rowsCopied: p.rowsCopied,
        rowsPerSecond: p.rowsPerSecond,
        etaSeconds: p.etaSeconds,
        throttle: p.throttle.state,
        ...(p.throttle.cause ? { throttleCause: p.throttle.cause } : {}),
      };
    }
    case 'start-verify':
      return { ...(await startVerify(ctx)), complete: false };
    case 'poll-verify': {
      await assertCurrentVerificationRun(ctx, event.runId);
      const poll = await pollVerify(ctx, event.runId);
      if (!poll.complete)
        return { runId: event.runId, complete: false, slicesDone: poll.slicesDone, slices: poll.slices };
      deps.metric?.('VerificationMismatchedWindows', poll.report.mismatches.length);
      return {
        runId: event.runId,
        complete: true,
        clean: poll.clean,
        tables: poll.report.tables,
        repaired: poll.report.repaired.length,
      };
    }
    case 'start-cleanup':
      return { archive: await startCleanup(ctx, { confirm: event.request?.confirm }) };
    case 'archive-status':
      if (!ctx.backup) throw new MigrationError('no backup port configured');
      return { archive: event.archive, status: await ctx.backup.status(event.archive) };
    case 'finish-cleanup':
      return finishCleanup(ctx, event.archive, { confirm: event.request?.confirm });
    case 'drop-archives':
      return { dropped: await dropArchives(ctx, { confirm: event.request?.confirm ?? '' }) };
    case 'release':
      await releaseLock(ctx);
      await auditEvent(ctx, 'execution.finished', {});
      return { released: true };
    case 'execution-ended': {
      // An execution that failed before the control schema existed (bad input) left nothing to record.
      const control = await ctx.v2.query<{ t: string | null }>('SELECT to_regclass($1) AS t', [
        `${ctx.config.schemas.control}.migration_lock`,
      ]);
      if (!control.rows[0].t) return { status: event.status, lockReleased: false, recorded: false };
      const released = await releaseLock(ctx);
      await auditEvent(ctx, 'execution.ended', {
        status: event.status,
        ...(event.stateMachineArn ? { stateMachine: event.stateMachineArn } : {}),
        lockReleased: released,
      });
      return { status: event.status, lockReleased: released, recorded: true };
    }
    case 'record-failure': {
      const message = causeMessage(event.error.Cause);
      await auditEvent(ctx, 'execution.failed', { error: event.error.Error, cause: message }).catch(
        () => undefined,
      );
      // Only this execution's own lock is released (a refused second run leaves the first's).
      await releaseLock(ctx).catch(() => undefined);
      return { Error: event.error.Error, Cause: message };
    }
    case 'start-cutover':
      await acquireLock(ctx);
      return summarize(await startCutover(ctx));
    case 'cutover-next': {
      const status = await cutoverStatus(ctx);
      if (status.status === 'held' || status.status === 'rolled-back')
        return { state: status.status, percentage: status.percentage };
      if (await takeRegate(ctx)) {
        // Continued after an interruption: the level reached is gated (no bake) before moving on.
        return {
          state: 'applied',
          percentage: status.percentage,
          bakeSeconds: 0,
          last: status.level === status.schedule.length - 1,
          resumed: true,
        };
      }
      if (status.level + 1 >= status.schedule.length) return { state: 'done', percentage: status.percentage };
      const applied = await applyLevel(ctx, status.level + 1);
      deps.metric?.('TrafficPercentage', applied.percentage);
      return { state: 'applied', ...applied };
    }
    case 'health-gate': {
      const status = await cutoverStatus(ctx);
      if (status.status === 'rolled-back')
        return { healthy: false, reason: 'rolled back while baking', rolledBack: true };
      const gate = await healthGate({ ...ctx, repairQueue: deps.repairQueue });
      return {
        healthy: gate.healthy,
        rolledBack: false,
        reason: gate.reason,
        percentage: status.percentage,
        alarms: gate.alarms.map((a) => a.name),
        // What the Rollback state machine is started with when the gate is unhealthy.
        rollbackInput: {
          reason: `health gate at ${status.percentage} %: ${gate.reason}`,
          actor: gate.reason ?? 'health-gate',
        },
      };
    }
    case 'complete-cutover':
      return summarize(await completeCutover(ctx));
    case 'hold':
      return summarize(await setCutoverHeld(ctx, true));
    case 'resume':
      return summarize(await setCutoverHeld(ctx, false));
    case 'step': {
      await acquireLock(ctx);
      try {
        let status = await cutoverStatus(ctx);
        if (status.status !== 'running' && status.status !== 'held') status = await startCutover(ctx);
        if (status.level + 1 >= status.schedule.length) return { ...summarize(status), stepped: false };
        const applied = await applyLevel(ctx, status.level + 1);
        deps.metric?.('TrafficPercentage', applied.percentage);
        if (applied.percentage === 100) await completeCutover(ctx);
        return { ...summarize(await cutoverStatus(ctx)), stepped: true };
      } finally {
        await releaseLock(ctx);
      }
    }
    case 'rollback': {
      // No lock: a rollback must never wait for (or be refused by) a running cutover. The audit
      // log's actor is this execution; who asked (the alarm rule says {"actor":"alarm"}, the CLI
      // `cli:<user>`) is recorded beside it as they said, never in its place.
      const { reason, force, confirm: confirmation } = event.request;
      const result = await rollback(ctx, {
        reason,
        force,
        confirm: confirmation,
        requestedBy: event.request.actor,
      });
      deps.metric?.('TrafficPercentage', 0);
      return { ...result };
    }
    default:
      return writeSwitchTask(deps, ctx, event);
  }
}

/** Who asked for a rollback: the alarm rule says {"actor":"alarm","reason":"alarm:<name>"}, the alarm is the actor. */
type WriteSwitchEvent = z.infer<(typeof writeSwitchTasks)[number]>;

/**
 * The write switch (under the migration lock, like a traffic step) and the rollback's steps
 * before the reads go back (no lock, like the rollback itself).
 */
async function writeSwitchTask(
  deps: OrchestratorDeps,
  ctx: MigrationContext & { queue: QueuePort },
  event: WriteSwitchEvent,
): Promise<Record<string, unknown>> {
  switch (event.task) {
    case 'switch-writes': {
      await acquireLock(ctx);
      try {
        return { ...(await switchWrites({ ...ctx, repairQueue: deps.repairQueue })) };
      } finally {
        await releaseLock(ctx);
      }
    }
    case 'rollback-writes-plan':
      // The read rollback's own refusals (after the rename; after dual-write stopped without
      // force and confirmation) come first, before any write is moved back.
      await rollbackGuards(ctx, { ...event.request, requestedBy: event.request.actor });
      return { ...(await rollbackWritesPlan(ctx)) };
    case 'drain-repair-queue': {
      const who = { ...ctx, repairQueue: deps.repairQueue };
      return {
        ...(await drainRepairQueue(who, {
          startedAt: event.drain.startedAt,
          force: event.request.force,
          reason: event.request.reason,
        })),
      };
    }
    case 'check-writes': {
      const checked = await checkWritesForRollback(ctx, {
        force: event.request.force,
        reason: event.request.reason,
      });
      return {
        unmirrorable: checked.unmirrorable.total,
        verification: checked.verification,
      };
    }
    case 'switch-writes-back':
      return {
        ...(await switchWritesBack(ctx, { reason: event.request.reason, force: event.request.force })),
      };
  }
}

function summarize(status: Awaited<ReturnType<typeof cutoverStatus>>) {
  return {
    status: status.status,
    level: status.level,
    percentage: status.percentage,
    levels: status.schedule.length,
  };
}
