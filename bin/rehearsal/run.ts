import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { LocalExecution } from '../../lambdas/adapters/local/local-state-machines';
import { RENAME_CONFIRMATION } from '../../lambdas/core/cleanup';
import { InvalidInputError } from '../../lambdas/core/errors';
import { phaseStates } from '../../lambdas/core/migration-state';
import { countV1Rows } from '../../lambdas/core/v1-schema';
import { ALARM_ACTOR } from '../../lib/constructs/alarms';
import { failAtLevel, workerKiller } from './faults';
import { localExecutor, type LocalExecutor } from './executions';
import { backendSettings, SyntheticBackend, type LoadStats } from './load';
import { DEFAULT_LOCAL_DIR, openLocalEnvironment, type LocalEnvironment } from './local-environment';
import { checkOptions, type FailAt, type RehearsalOptions } from './options';
import { startProgress } from './progress';
import { writeReport, type RehearsalReport } from './report';
import { buildReport, finalComparison, v1Changes } from './results';
import type { RehearsalResult } from './summary';

export { REHEARSAL_LEVELS, type RehearsalOptions } from './options';
export { summaryLine, summaryLines, type RehearsalResult } from './summary';

/** How the executions ended: the outcome, and the error of the one that failed. */
interface PhasesOutcome {
  outcome: RehearsalReport['outcome'];
  error?: string;
  load?: LoadStats;
}

const failure = (run: LocalExecution) => `${run.error}: ${run.cause}`;

/** The synthetic backend of --dual-write-load, reading and dual-writing through the client. */
async function startBackend(env: LocalEnvironment, options: RehearsalOptions): Promise<SyntheticBackend> {
  const backend = new SyntheticBackend(env.v1, env.v2, env.parameters, {
    perSecond: options.dualWriteLoad!,
    ...backendSettings(env.config),
    repairs: env.repairs,
  });
  await backend.start();
  options.print(
    `synthetic backend: ~${options.dualWriteLoad} operations/s through the TrafficRouter and DualWriter`,
  );
  return backend;
}

/**
 * Phases 2–4: advance through VERIFY, run the cutover (a failed health gate is the rollback),
 * then the write switch. With `--fail-at write-switch`, the backend writes V2 first for a
 * while, then the rollback alarm fires: the Rollback state machine is started as the alarm's
 * rule starts it, and brings the writes back to V1, then the reads.
 */
async function backfillToWriteSwitch(
  env: LocalEnvironment,
  executor: LocalExecutor,
  failAt: FailAt | undefined,
  backend: SyntheticBackend | undefined,
): Promise<PhasesOutcome> {
  const migrated = await executor.execute('migration', { action: 'advance', through: 'VERIFY' });
  if (migrated.status !== 'SUCCEEDED') return { outcome: 'FAILED', error: failure(migrated) };
  // A run killed during cleanup: the cutover and the write switch are behind it (and refuse to
  // run again once cleanup has begun); cleanup goes on from where it stopped.
  const states = await phaseStates({ ...env.deps, actor: 'local-runner' });
  if (states.find((s) => s.phase === 'CLEANUP')?.status === 'running') return { outcome: 'COMPLETED' };
  const cut = await executor.execute('cutover', { action: 'run' });
  if (cut.error === 'HealthGateFailed') {
    // With --fail-at write-switch the writes never switched: not the rollback it rehearses.
    if (failAt?.at === 'write-switch') {
      return {
        outcome: 'ROLLED_BACK',
        error: `the cutover rolled back before the write switch: ${cut.cause}`,
      };
    }
    return { outcome: 'ROLLED_BACK' };
  }
  if (cut.status !== 'SUCCEEDED') return { outcome: 'FAILED', error: failure(cut) };
  const switched = await executor.execute('cutover', { action: 'switch-writes' });
  if (switched.status !== 'SUCCEEDED') return { outcome: 'FAILED', error: failure(switched) };
  // The backend writes V2 first for a while (V1 mirrored from V2), before cleanup or the fault.
  if (backend) await backend.whenWrittenV2First(WRITES_V2_FIRST);
  if (failAt?.at !== 'write-switch') return { outcome: 'COMPLETED' };
  env.alarms.raise('RehearsalFault', 'injected by --fail-at write-switch');
  const rollback = await executor.execute('rollback', { reason: 'alarm:RehearsalFault', actor: ALARM_ACTOR });
  if (rollback.status !== 'SUCCEEDED') return { outcome: 'FAILED', error: failure(rollback) };
  return { outcome: 'ROLLED_BACK' };
}

/** Writes the synthetic backend makes V2 first after the write switch (before cleanup or the fault). */
const WRITES_V2_FIRST = 20;

/**
 * Phases 1–4 as ops would run them: advance through PREPARE, start the synthetic backend (with
 * --dual-write-load) for phases 2–4, advance through VERIFY, run the cutover, switch the writes.
 */
async function migrate(
  env: LocalEnvironment,
  executor: LocalExecutor,
  options: RehearsalOptions,
  failAt: FailAt | undefined,
): Promise<PhasesOutcome> {
  const prepared = await executor.execute('migration', { action: 'advance', through: 'PREPARE' });
  if (prepared.status !== 'SUCCEEDED') return { outcome: 'FAILED', error: failure(prepared) };
  const backend = options.dualWriteLoad ? await startBackend(env, options) : undefined;
  let outcome: PhasesOutcome;
  try {
    outcome = await backfillToWriteSwitch(env, executor, failAt, backend);
  } finally {
    const load = await backend?.stop();
    if (load) outcome = { ...outcome!, load };
  }
  return outcome;
}

/**
 * Phase 5, when it may run: on the embedded database always, on given databases when asked
 * (--include-cleanup). Either way the rehearsal has been told to rename, so it passes the
 * confirmation words an operator types on AWS.
 */
async function cleanup(
  env: LocalEnvironment,
  executor: LocalExecutor,
  options: RehearsalOptions,
): Promise<string | undefined> {
  if (env.source === 'given' && !options.includeCleanup) {
    options.print('cleanup skipped: V1 was given by URL (pass --include-cleanup to rename its tables)');
    return undefined;
  }
  const run = await executor.execute('migration', { action: 'advance', confirm: RENAME_CONFIRMATION });
  return run.status === 'SUCCEEDED' ? undefined : failure(run);
}

/** `--keep-db` keeps the database in a folder that must not hold another migration already. */
function keepFolder(options: RehearsalOptions): string | undefined {
  if (!options.keepDb) return undefined;
  const dir = options.localDir ?? DEFAULT_LOCAL_DIR;
  if (existsSync(join(resolve(dir), 'pg'))) {
    throw new InvalidInputError('command-line flags', [
      {
        field: '--keep-db',
        problem: `${dir} already holds a local migration: remove it with \`npm run migrate -- reset --local\`, or pass --local-dir`,
      },
    ]);
  }
  return dir;
}

/**
 * The whole migration on one machine: embedded PostgreSQL (or given databases), V1 generated
 * when empty, then the synthesized Migration and Cutover state machines executed locally with
 * the real handlers, the local queue and a local parameter store, through all five phases.
 * The embedded database is removed however the run ends, unless `keepDb`.
 */
export async function runRehearsal(options: RehearsalOptions): Promise<RehearsalResult> {
  const { failAt } = checkOptions(options);
  const keepIn = keepFolder(options);
  const startedAt = new Date();
  const killer = options.killWorkers ? workerKiller(() => env.v2) : undefined;
  const env: LocalEnvironment = await openLocalEnvironment({
    v1Url: options.v1Url,
    v2Url: options.v2Url,
    ...(options.generateV1In ? { generateGivenV1In: options.generateV1In } : {}),
    keepIn,
    generate: { devices: options.devices, telemetry: options.telemetry, seed: options.seed },
    concurrency: options.concurrency,
    windowRows: options.windowRows,
    bakeSeconds: options.bakeSeconds,
    backupDirectory: `${options.reportDir}/backups`,
    ...(killer ? { wrapHandler: killer.wrapHandler } : {}),
    print: options.print,
    tty: options.tty,
  });
  const progress = startProgress(env, options);
  try {
    const v1Before = await countV1Rows(env.v1, 'public');
    const executor = localExecutor(env, {
      print: options.print,
      progress,
      bakeSeconds: options.bakeSeconds,
      ...(failAt?.at === 'cutover'
        ? { wrapTask: failAtLevel(failAt.level, { ...env, trafficParameter: env.names.trafficPercentage }) }
        : {}),
    });
    const phases = await migrate(env, executor, options, failAt);
    const load = phases.load;
    let { outcome, error } = phases;
    // Before cleanup renames V1.
    const comparison = await finalComparison(env);
    if (outcome === 'COMPLETED') {
      error = await cleanup(env, executor, options);
      if (error) outcome = 'FAILED';
    }
    await progress.stop();
    // A rollback leaves V1 as it was, unless a synthetic backend wrote to it.
    if (outcome === 'ROLLED_BACK' && !load) error ??= await v1Changes(env, v1Before);
    // Every row the backend inserted V2 first must be in V1 (mirrored, or repaired from V2).
    if (load?.rowsMissingInV1) {
      error ??= `${load.rowsMissingInV1} of ${load.rowsInsertedV2First} rows written V2 first are missing in V1`;
    }
    if (failAt?.at === 'write-switch' && outcome === 'ROLLED_BACK' && !comparison.verification.clean) {
      error ??= 'V1 and V2 differ after the rollback from the write switch';
    }
    const report = await buildReport(env, {
      startedAt,
      outcome,
      error,
      comparison,
      samples: progress.samples,
      failAt: options.failAt,
      killedWorkers: killer?.killed ?? 0,
      load,
    });
    const paths = writeReport(report, options.reportDir);
    const exitCode = report.ok ? 0 : outcome === 'ROLLED_BACK' && !error ? 3 : 1;
    return { report, paths, exitCode, ...(env.directory ? { keptIn: keepIn } : {}) };
  } finally {
    await progress.stop();
    await env.close();
  }
}
