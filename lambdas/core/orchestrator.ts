import { asRetryable } from './db';
import { MigrationError, originalFailure } from './errors';
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
import { changeControl, parseControlChange } from './backfill/control';
import { redriveWindows } from './backfill/redrive';
import { assertCurrentVerificationRun, guardTask } from './task-guards';
import {
  checkWritesForRollback,
  drainRepairQueue,
  rollbackWritesPlan,
  switchWrites,
  switchWritesBack,
} from './write-switch';
import {
  cutoverInputSchema,
  migrationInputSchema,
  rollbackInputSchema,
  taskEventSchema,
  validate,
  type WriteSwitchEvent,
} from './task-events';
import type { DeadLetterPort, QueueDepthPort, QueuePort } from '../ports/queue';
import { METRIC_NAMES, type MetricName } from '../../lib/runtime-contract';

/**
 * The tasks of the three state machines, dispatched by name: the orchestrator Lambda calls
 * `orchestrate` with its event, and the local rehearsal calls it with the same events, so the
 * flow ops run is the flow that was tested. Every input from outside is validated first
 * (task-events.ts).
 */

export interface OrchestratorDeps extends Omit<MigrationContext, 'actor'> {
  queue: QueuePort;
  /** The dual writes' repair queue, whose depth the rollback from the write switch waits on. */
  repairQueue?: QueueDepthPort;
  /** Publishes a metric (CloudWatch through Powertools on AWS; nothing or a log locally). */
  metric?: (name: MetricName, value: number) => void;
  /** The worker queue's DLQ, which `redrive` reads the failed windows' messages from. */
  deadLetters?: DeadLetterPort;
}

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
 * as a TransientDatabaseError, retryable like every MigrationError whose `retryable` is true:
 * the task hands it to Step Functions as RetryableTaskError (taskFailure), which the states'
 * Retry matches. A task is safe to run again (each step checks what is already done).
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
      deps.metric?.(METRIC_NAMES.backfillThrottled, control.state === 'running' ? 0 : 1);
      return { ...control };
    }
    case 'redrive': {
      // No lock, as the throttle: it works while a run waits on the failed windows.
      const result = await redriveWindows(ctx);
      deps.metric?.(
        METRIC_NAMES.backfillWindowsRedriven,
        result.redriven.length + result.resetToPending.length,
      );
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
      deps.metric?.(METRIC_NAMES.backfillWindowsDone, p.windowsDone);
      // 1 while the workers are held back (paused, under a ceiling, V1 under pressure).
      deps.metric?.(METRIC_NAMES.backfillThrottled, p.throttle.state === 'running' ? 0 : 1);
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
      deps.metric?.(METRIC_NAMES.verificationMismatchedWindows, poll.report.mismatches.length);
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
      // A retryable error reached Step Functions under RETRYABLE_TASK_ERROR: record its own name.
      const { error, message } = originalFailure(event.error.Error, causeMessage(event.error.Cause));
      await auditEvent(ctx, 'execution.failed', { error, cause: message }).catch(() => undefined);
      // Only this execution's own lock is released (a refused second run leaves the first's).
      await releaseLock(ctx).catch(() => undefined);
      return { Error: error, Cause: message };
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
      deps.metric?.(METRIC_NAMES.trafficPercentage, applied.percentage);
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
        deps.metric?.(METRIC_NAMES.trafficPercentage, applied.percentage);
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
      deps.metric?.(METRIC_NAMES.trafficPercentage, 0);
      return { ...result };
    }
    default:
      return writeSwitchTask(deps, ctx, event);
  }
}

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
