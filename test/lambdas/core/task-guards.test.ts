import { MemoryParameters } from '../../../lambdas/adapters/local/memory-parameters';
import { startLocalWorkers, type LocalWorkers } from '../../../lambdas/adapters/local/local-workers';
import { DROP_CONFIRMATION, RENAME_CONFIRMATION } from '../../../lambdas/core/cleanup';
import { ROLLBACK_CONFIRMATION } from '../../../lambdas/core/cutover';
import { orchestrate, type OrchestratorDeps } from '../../../lambdas/core/orchestrator';
import { GUARDED_TASKS } from '../../../lambdas/core/task-guards';
import { freshDatabases, type TestDatabases } from '../../support/pg';
import { quickCutover, rowCounts, seedV1, testConfig } from '../../support/fixtures';
import { localOrchestratorDeps } from '../../support/migration';

/**
 * Every task that changes the migration, invoked directly (as anyone with lambda:InvokeFunction
 * on the orchestrator could) with a valid-looking event at the wrong time: refused with a named
 * error, and nothing of the migration changed.
 */

const execution = (name: string) => `arn:aws:states:eu-west-1:123456789012:execution:Migration:${name}`;
const RUN = execution('the-run');
const INTRUDER = execution('intruder');
const TRAFFIC = '/iot-migration/v2-traffic-percentage';
const DUAL_WRITE = '/iot-migration/dual-write';

interface Env {
  dbs: TestDatabases;
  deps: OrchestratorDeps;
  parameters: MemoryParameters;
  workers: LocalWorkers;
}

async function environment(): Promise<Env> {
  const dbs = await freshDatabases('guards');
  await seedV1(dbs.v1, { devices: 6, telemetry: 600, seed: 3 });
  const config = testConfig(dbs, {
    batch: { telemetryWindowRows: 200, entityWindowRows: 10, concurrency: 2, maxReceiveCount: 3 },
    cutover: quickCutover([50, 100], 0),
  });
  const parameters = new MemoryParameters({ [TRAFFIC]: '0', [DUAL_WRITE]: 'off' });
  const workers = startLocalWorkers({ v1: dbs.v1, v2: dbs.v2, config });
  const deps = localOrchestratorDeps(dbs, config, parameters, workers.queue);
  return { dbs, deps, parameters, workers };
}

/** Everything a refused task must leave as it was (the audit log aside: refusals are recorded). */
async function state(env: Env) {
  const q = async (sql: string) =>
    (await env.dbs.v2.query(sql).catch(() => ({ rows: [] as Record<string, unknown>[] }))).rows;
  return {
    parameters: env.parameters.entries(),
    phases: await q('SELECT phase, status FROM migration_control.phase_runs ORDER BY id'),
    lock: await q('SELECT holder FROM migration_control.migration_lock'),
    windows: await q(
      'SELECT status, count(*)::int AS n FROM migration_control.windows GROUP BY 1 ORDER BY 1',
    ),
    verificationRuns: await q('SELECT id, status FROM migration_control.verification_runs ORDER BY id'),
    cutover: await q('SELECT status, level, percentage FROM migration_control.cutover_state'),
    cleanup: await q(
      'SELECT dual_write_stopped_at, archive_backup, renamed_at, dropped_at FROM migration_control.cleanup_state',
    ),
    v1: await rowCounts(env.dbs.v1, 'public'),
    v2: await rowCounts(env.dbs.v2, 'public'),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs a task as `actor`; returns its result. */
const task = (env: Env, event: Record<string, unknown>, actor = RUN) =>
  orchestrate(env.deps, { actor, ...event });

/** Asserts the task is refused with `errorName` and changes nothing. */
async function refused(env: Env, event: Record<string, unknown>, errorName: string, actor = RUN) {
  const before = await state(env);
  const error = await task(env, event, actor).then(
    () => new Error(`${String(event.task)} was not refused`),
    (e: unknown) => e as Error,
  );
  expect({ task: event.task, error: error.name }).toEqual({ task: event.task, error: errorName });
  expect(await state(env)).toEqual(before);
  return error;
}

/** Every task of GUARDED_TASKS with a valid-looking event (a real archive where one is named). */
function events(archive: Record<string, unknown>): Record<string, Record<string, unknown>> {
  return {
    prepare: { task: 'prepare' },
    'start-backfill': { task: 'start-backfill' },
    'poll-backfill': { task: 'poll-backfill' },
    'start-verify': { task: 'start-verify' },
    'poll-verify': { task: 'poll-verify', runId: 1 },
    'start-cleanup': { task: 'start-cleanup', request: { confirm: RENAME_CONFIRMATION } },
    'finish-cleanup': { task: 'finish-cleanup', archive, request: { confirm: RENAME_CONFIRMATION } },
    'cutover-next': { task: 'cutover-next' },
    'health-gate': { task: 'health-gate' },
    'complete-cutover': { task: 'complete-cutover' },
    'drop-archives': { task: 'drop-archives', request: { confirm: DROP_CONFIRMATION } },
    hold: { task: 'hold' },
    resume: { task: 'resume' },
  };
}

const LOCKED_TASKS = Object.entries(GUARDED_TASKS)
  .filter(([, step]) => step.lock)
  .map(([name]) => name);

describe('every task that changes the migration re-checks its guards and the lock where it acts', () => {
  let env: Env;
  let phase1Archive: Record<string, unknown>;
  beforeAll(async () => {
    env = await environment();
  });
  afterAll(async () => {
    await env.workers.stop();
    await env.dbs.drop();
  });

  it('lists every mutating task with a test event', () => {
    expect(Object.keys(events({})).sort()).toEqual(Object.keys(GUARDED_TASKS).sort());
  });

  it('refuses each one from a caller without the lock, before anything has run', async () => {
    for (const name of LOCKED_TASKS) {
      await refused(env, events({ id: 'x', kind: 'export', location: '/nowhere' })[name], 'LockNotHeldError');
    }
  });

  it('refuses an actor that is not an execution ARN (the audit log records the acting execution)', async () => {
    await refused(env, { task: 'begin', request: {} }, 'InvalidInputError', 'person:mallory');
  });

  it('after Phase 1, refuses every later step to the lock holder, naming what is wrong', async () => {
    await task(env, { task: 'begin', request: {} });
    await task(env, { task: 'prepare' });
    const backup = await env.dbs.v2.query('SELECT id, kind, location FROM migration_control.backups');
    phase1Archive = backup.rows[0];
    const all = events(phase1Archive);
    for (const name of ['prepare', 'poll-backfill', 'start-verify', 'poll-verify', 'start-cleanup'])
      await refused(env, all[name], 'GuardRefusedError');
    const finish = await refused(env, all['finish-cleanup'], 'GuardRefusedError');
    expect(finish.message).toMatch(/Phase CLEANUP is pending, not running/);
    for (const name of ['cutover-next', 'health-gate', 'complete-cutover', 'hold', 'resume'])
      await refused(env, all[name], 'GuardRefusedError');
    const drop = await task(env, all['drop-archives']).catch((e: Error) => e);
    expect(drop).toMatchObject({
      name: 'GuardRefusedError',
      message: expect.stringMatching(/not been archived/),
    });
  });

  it('runs phases 2 and 3 through the tasks, then refuses them again and a stale verification poll', async () => {
    let backfill = await task(env, { task: 'start-backfill' });
    while (!backfill.complete) {
      await sleep(50);
      backfill = await task(env, { task: 'poll-backfill' });
    }
    const started = await task(env, { task: 'start-verify' });
    let verify: Record<string, unknown> = started;
    while (!verify.complete) {
      await sleep(50);
      verify = await task(env, { task: 'poll-verify', runId: started.runId });
    }
    expect(verify.clean).toBe(true);
    await task(env, { task: 'release' });

    await task(env, { task: 'begin', request: {} });
    const all = events(phase1Archive);
    await refused(env, all['start-backfill'], 'GuardRefusedError');
    await refused(env, { task: 'poll-verify', runId: started.runId }, 'GuardRefusedError');
    await refused(env, all['start-cleanup'], 'GuardRefusedError');
    await refused(env, all['cutover-next'], 'GuardRefusedError');
    await task(env, { task: 'release' });
  });

  it('cleanup: refused without its confirmation, to another caller, and with an archive other than its own', async () => {
    await task(env, { task: 'start-cutover' });
    for (let level = 0; level < 2; level++) {
      expect(await task(env, { task: 'cutover-next' })).toMatchObject({ state: 'applied' });
      expect(await task(env, { task: 'health-gate' })).toMatchObject({ healthy: true });
    }
    await task(env, { task: 'complete-cutover' });
    await task(env, { task: 'release' });
    expect(env.parameters.entries()[TRAFFIC]).toBe('100');
    // Cleanup ends the reverse mirror: it needs the writes switched to V2 first.
    expect(await task(env, { task: 'switch-writes' })).toMatchObject({ primary: 'v2' });

    await task(env, { task: 'begin', request: {} });
    const unconfirmed = await refused(env, { task: 'start-cleanup' }, 'ConfirmationRequiredError');
    expect(unconfirmed.message).toContain(`"confirm": "${RENAME_CONFIRMATION}"`);
    await refused(env, { task: 'start-cleanup', request: { confirm: 'yes' } }, 'ConfirmationRequiredError');
    await refused(env, events(phase1Archive)['start-cleanup'], 'LockNotHeldError', INTRUDER);

    const { archive } = (await task(env, events(phase1Archive)['start-cleanup'])) as {
      archive: Record<string, unknown>;
    };
    expect(env.parameters.entries()[DUAL_WRITE]).toBe('off');
    // Phase 1's backup passed off as the archive: refused, V1 keeps its tables.
    const wrong = await refused(env, events(phase1Archive)['finish-cleanup'], 'GuardRefusedError');
    expect(wrong.message).toMatch(/is not the one cleanup started/);
    await refused(env, { task: 'finish-cleanup', archive }, 'ConfirmationRequiredError');
    await refused(env, events(archive)['finish-cleanup'], 'LockNotHeldError', INTRUDER);
    // Between the stop and the rename, a forced rollback needs its confirmation too.
    const forced = await refused(
      env,
      { task: 'rollback', request: { reason: 'regret', force: true } },
      'ConfirmationRequiredError',
    );
    expect(forced.message).toMatch(/missed every write since dual-write stopped/);

    const finished = await task(env, events(archive)['finish-cleanup']);
    expect(finished.renamed).toEqual([
      'users_v1_archived',
      'devices_v1_archived',
      'device_data_v1_archived',
      'alerts_v1_archived',
    ]);
    // Twice is refused: the tables are renamed already.
    await refused(env, events(archive)['finish-cleanup'], 'GuardRefusedError');
  });

  it('after the rename, refuses any rollback, forced and confirmed or not, and dropping before the retention', async () => {
    const renamed = await refused(
      env,
      { task: 'rollback', request: { reason: 'regret', force: true, confirm: ROLLBACK_CONFIRMATION } },
      'RollbackRefusedError',
    );
    expect(renamed.message).toMatch(/renamed to <name>_v1_archived/);
    await refused(
      env,
      { task: 'drop-archives', request: { confirm: DROP_CONFIRMATION } },
      'LockNotHeldError',
      INTRUDER,
    );
    const early = await task(env, { task: 'drop-archives', request: { confirm: DROP_CONFIRMATION } }).catch(
      (e: Error) => e,
    );
    expect(early).toMatchObject({
      name: 'GuardRefusedError',
      message: expect.stringMatching(/retention period/),
    });
    expect(Object.keys(await rowCounts(env.dbs.v1, 'public'))).toHaveLength(4);
    await task(env, { task: 'release' });
  });
});
