import { BackfillFailedError, BackupError } from './errors';
import {
  buildDeferredIndexes,
  buildReadyPartitionIndexes,
  planBackfill,
  pumpBackfill,
  type BackfillProgress,
} from './backfill';
import {
  auditEvent,
  beginPhase,
  endPhase,
  failPhase,
  readParameter,
  setParameter,
  type MigrationContext,
} from './migration-state';
import { settleThrottle } from './backfill/control';
import { resendDeferredSlices } from './backfill/throttle';
import { controlSchema } from './db';
import { runPrepare, type PrepareReport } from './prepare';
import { checkV1Schema } from './v1-schema';
import {
  concludeRun,
  startVerification,
  verificationFailure,
  verificationProgress,
  type VerificationProgress,
  type VerificationReport,
} from './verify';
import type { QueuePort } from '../ports/queue';
import { describeError } from './safe-error';

/**
 * The phases as steps a state machine (or the local driver) calls: each `start` begins the
 * phase after its order check, each `poll` reports progress and closes the phase when done.
 * The caller holds the migration lock.
 */

/** Rows a verification report deep-compares per table. */
export const DEFAULT_SAMPLE_SIZE = 100;

export async function prepareStep(ctx: MigrationContext): Promise<PrepareReport> {
  if (!ctx.backup) {
    throw new BackupError(
      'Phase 1 cannot back V1 up: no backup is configured (on AWS set snapshot.rdsInstanceId or snapshot.auroraClusterId in the stack config)',
    );
  }
  const backup = ctx.backup;
  // V1 is checked before anything is written anywhere.
  await checkV1Schema(ctx.v1, ctx.config.schemas.v1);
  await beginPhase(ctx, 'PREPARE');
  try {
    const report = await runPrepare({ v1: ctx.v1, v2: ctx.v2, config: ctx.config, backup, actor: ctx.actor });
    await endPhase(ctx, 'PREPARE', { steps: report.steps, storage: report.storage.kind });
    return report;
  } catch (error) {
    await failPhase(ctx, 'PREPARE', describeError(error));
    throw error;
  }
}

/**
 * Begins Phase 2: dual-write goes on first (the backend writes V1 then V2 from its next
 * refresh on), then the windows are planned and the first stage is sent.
 */
export async function startBackfill(ctx: MigrationContext & { queue: QueuePort }): Promise<BackfillProgress> {
  await beginPhase(ctx, 'BACKFILL');
  try {
    await setParameter(
      ctx,
      'dualWrite',
      'on',
      'Phase 2: the backend writes V1 then V2 while history is copied',
    );
    const plan = await planBackfill(ctx);
    await auditEvent(ctx, 'backfill.planned', {
      tables: plan.tables,
      partitionsCreated: plan.partitionsCreated,
      chunksCreated: plan.chunksCreated.length,
      indexesDeferred: plan.indexesDeferred,
    });
    return (await pumpBackfill(ctx)).progress;
  } catch (error) {
    await failPhase(ctx, 'BACKFILL', describeError(error));
    throw error;
  }
}

/** Sends the next stage when it may start; closes the phase when every window is done. */
export async function pollBackfill(ctx: MigrationContext & { queue: QueuePort }): Promise<BackfillProgress> {
  const { progress } = await pumpBackfill(ctx);
  if (progress.complete) {
    // The indexes dropped for the load are built before the phase ends: Phase 3 and the
    // backend find V2 as the schema defines it.
    const built = await buildDeferredIndexes(ctx.v2, ctx.config);
    if (built.length > 0) await auditEvent(ctx, 'backfill.indexes-built', { indexes: built });
    await settleThrottle(ctx.v2, ctx.config);
    await endPhase(ctx, 'BACKFILL', {
      rows: progress.rowsCopied,
      rowsPerSecond: progress.rowsPerSecond,
      windows: progress.windowsTotal,
      seconds: progress.elapsedSeconds,
    });
  } else if (
    progress.windowsFailed > 0 &&
    progress.windowsFailed + progress.windowsDone === progress.windowsTotal
  ) {
    const error = new BackfillFailedError(progress.failures);
    await failPhase(ctx, 'BACKFILL', describeError(error));
    throw error;
  } else {
    // Native partitions whose windows are all done get their indexes while the rest copies.
    await buildReadyPartitionIndexes(ctx.v2, ctx.config, 2);
  }
  return progress;
}

/** Begins Phase 3: a full verification run, its slices fanned out through the queue. */
export async function startVerify(
  ctx: MigrationContext & { queue: QueuePort },
): Promise<{ runId: number; slices: number }> {
  const begun = await beginPhase(ctx, 'VERIFY');
  try {
    if (begun === 'resumed') {
      // The interrupted run goes on: its checked slices stand, the others are (sent) again.
      const ctl = controlSchema(ctx.config);
      const { rows } = await ctx.v2.query<{ id: string; slices: string; done: string }>(
        `SELECT r.id, count(s.id) AS slices, count(s.id) FILTER (WHERE s.status = 'done') AS done
           FROM ${ctl}.verification_runs r JOIN ${ctl}.verification_slices s ON s.run_id = r.id
          WHERE r.status = 'running' AND r.scope = 'full' GROUP BY r.id ORDER BY r.id DESC LIMIT 1`,
      );
      if (rows[0]) {
        const runId = Number(rows[0].id);
        await auditEvent(ctx, 'verification.resumed', {
          runId,
          slices: Number(rows[0].slices),
          slicesDone: Number(rows[0].done),
        });
        await resendDeferredSlices(ctx, runId);
        return { runId, slices: Number(rows[0].slices) };
      }
    }
    return await startVerification(ctx);
  } catch (error) {
    await failPhase(ctx, 'VERIFY', describeError(error));
    throw error;
  }
}

export type VerifyPoll =
  | ({ complete: false } & VerificationProgress)
  | { complete: true; runId: number; clean: boolean; report: VerificationReport };

/**
 * Reports slice progress; once every slice is checked, builds the report, repairs mismatched
 * windows (re-verifying each; from V2 once V2 is the write primary), records the outcome, and
 * closes the phase: done when clean, failed (VerificationFailedError naming the windows) when not.
 */
export async function pollVerify(
  ctx: MigrationContext & { queue?: QueuePort },
  runId: number,
  options: { sampleSize?: number; recheckDelayMs?: number } = {},
): Promise<VerifyPoll> {
  // Slices the workers gave back (paused, V1 under pressure too long) go out again.
  if (ctx.queue) await resendDeferredSlices({ ...ctx, queue: ctx.queue }, runId);
  const progress = await verificationProgress(ctx.v2, ctx.config, runId);
  if (!progress.complete) return { ...progress, complete: false };
  const report = await concludeRun(ctx, runId, {
    sampleSize: options.sampleSize ?? DEFAULT_SAMPLE_SIZE,
    recheckDelayMs: options.recheckDelayMs,
    truth: (await readParameter(ctx, 'writePrimary')) === 'v2' ? 'v2' : 'v1',
  });
  if (!report.clean) {
    const error = verificationFailure(report);
    await failPhase(ctx, 'VERIFY', describeError(error));
    throw error;
  }
  await endPhase(ctx, 'VERIFY', {
    runId,
    tables: report.tables,
    repaired: report.repaired.length,
    repairedRows: report.repairedRows?.length ?? 0,
    recheck: report.recheck ?? null,
  });
  return { complete: true, runId, clean: true, report };
}
