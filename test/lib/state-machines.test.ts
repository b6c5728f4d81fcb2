import { LocalAlarms } from '../../lambdas/adapters/local/local-alarms';
import { startLocalWorkers, type LocalWorkers } from '../../lambdas/adapters/local/local-workers';
import { LocalStateMachines } from '../../lambdas/adapters/local/local-state-machines';
import { MemoryParameters } from '../../lambdas/adapters/local/memory-parameters';
import { testBackup } from '../support/migration';
import {
  AlarmLookupError,
  MigrationError,
  RETRYABLE_TASK_ERROR,
  TransientDatabaseError,
} from '../../lambdas/core/errors';
import * as errors from '../../lambdas/core/errors';
import type { OrchestratorDeps } from '../../lambdas/core/orchestrator';
import { synthesizeDefinitions, type StateMachineDefinitions } from '../../lib/local-definitions';
import { freshDatabases, type TestDatabases } from '../support/pg';
import { rowCounts, seedV1, testConfig } from '../support/fixtures';

let definitions: StateMachineDefinitions;
beforeAll(() => {
  definitions = synthesizeDefinitions();
});

const TRAFFIC = '/iot-migration/v2-traffic-percentage';

async function environment(prefix: string) {
  const dbs = await freshDatabases(prefix);
  await seedV1(dbs.v1, { devices: 10, telemetry: 2500, seed: 8 });
  const config = testConfig(dbs, {
    batch: { telemetryWindowRows: 1000, entityWindowRows: 10, concurrency: 2, maxReceiveCount: 3 },
    cutover: {
      schedule: [
        { percentage: 10, bakeSeconds: 1 },
        { percentage: 25, bakeSeconds: 1 },
        { percentage: 50, bakeSeconds: 1 },
        { percentage: 100, bakeSeconds: 1 },
      ],
      soakMinutes: 0,
    },
  });
  const parameters = new MemoryParameters({ [TRAFFIC]: '0', '/iot-migration/dual-write': 'off' });
  const alarms = new LocalAlarms();
  const workers: LocalWorkers = startLocalWorkers({ v1: dbs.v1, v2: dbs.v2, config });
  const deps: OrchestratorDeps = {
    v1: dbs.v1,
    v2: dbs.v2,
    config,
    parameters,
    alarms,
    queue: workers.queue,
    backup: testBackup(dbs),
  };
  const close = async () => {
    await workers.stop();
    await dbs.drop();
  };
  return { dbs, deps, parameters, alarms, close };
}

const fastWaits = { waits: { '*': 20 }, retryMs: 10 };

describe('the synthesized state machines, executed locally against real handlers', () => {
  let env: Awaited<ReturnType<typeof environment>>;
  beforeAll(async () => {
    env = await environment('sfn');
  });
  afterAll(() => env.close());

  it('fails invalid input in its first state with a clear error', async () => {
    const machines = new LocalStateMachines(definitions, env.deps, fastWaits);
    const run = await machines.run('migration', { action: 'fly' });
    expect(run).toMatchObject({ status: 'FAILED', error: 'InvalidInputError' });
    expect(run.cause).toMatch(/Invalid Migration input: action/);
    expect(run.path).toEqual(['Validate input', 'Input is invalid']);
    const rollback = await machines.run('rollback', { reason: '' });
    expect(rollback).toMatchObject({ status: 'FAILED', error: 'InvalidInputError' });
    expect(rollback.cause).toMatch(/reason/);
  });

  it('changes the backfill control from the console input ({"action":"throttle",…}), refusing a bad one by name', async () => {
    const machines = new LocalStateMachines(definitions, env.deps, fastWaits);
    const paused = await machines.run('migration', { action: 'throttle', pause: true, reason: 'V1 batch' });
    expect(paused.status).toBe('SUCCEEDED');
    expect(paused.path).toContain('Change the backfill throttle');
    expect(paused.output).toMatchObject({ paused: true, state: 'paused', reason: 'V1 batch' });
    const bad = await machines.run('migration', { action: 'throttle', rowsPerSecond: -1 });
    expect(bad).toMatchObject({ status: 'FAILED', error: 'InvalidInputError' });
    expect(bad.cause).toMatch(/rowsPerSecond/);
    expect(bad.path).toEqual(['Validate input', 'Input is invalid']);
    const resumed = await machines.run('migration', { action: 'throttle', pause: false });
    expect(resumed.output).toMatchObject({ paused: false, state: 'running' });
    const audit = await env.dbs.v2.query(
      `SELECT details FROM migration_control.audit_log WHERE action = 'throttle.changed' ORDER BY id`,
    );
    expect(audit.rows.map((r) => r.details.to.paused)).toEqual([true, false]);
  });

  it('redrives failed windows from the console input ({"action":"redrive"}), refused by name before the backfill', async () => {
    const machines = new LocalStateMachines(definitions, env.deps, fastWaits);
    const early = await machines.run('migration', { action: 'redrive' });
    expect(early).toMatchObject({ status: 'FAILED', error: 'GuardRefusedError' });
    expect(early.cause).toMatch(/the backfill has not started/);
    expect(early.path).toContain('Redrive failed backfill windows');
    const extra = await machines.run('migration', { action: 'redrive', windowId: 3 });
    expect(extra).toMatchObject({ status: 'FAILED', error: 'InvalidInputError' });
    expect(extra.path).toEqual(['Validate input', 'Input is invalid']);
  });

  it('refuses a phase skip: a cutover before verification fails with PhaseOrderError and releases its lock', async () => {
    const machines = new LocalStateMachines(definitions, env.deps, fastWaits);
    const run = await machines.run('cutover', { action: 'run' });
    expect(run).toMatchObject({ status: 'FAILED', error: 'PhaseOrderError' });
    expect(run.cause).toMatch(/PREPARE, BACKFILL, VERIFY must be complete first/);
    expect(run.caught).toContain('Check guards, take the lock');
    expect(run.path).toContain('Record the failure');
    const lock = await env.dbs.v2.query('SELECT holder FROM migration_control.migration_lock');
    expect(lock.rows[0].holder).toBeNull();
    expect(env.parameters.entries()[TRAFFIC]).toBe('0');
  });

  it('retries a retryable error and carries on', async () => {
    let failures = 0;
    const machines = new LocalStateMachines(definitions, env.deps, {
      ...fastWaits,
      wrapTask: async (event, run) => {
        if (event.task === 'prepare' && failures === 0) {
          failures++;
          throw new TransientDatabaseError('connection reset (injected)');
        }
        return run();
      },
    });
    const run = await machines.run('migration', { action: 'advance', through: 'verify' });
    expect(run.status).toBe('SUCCEEDED');
    expect(run.retries).toEqual(['Phase 1: back up V1, deploy V2, default tenant']);
    expect(run.path).toEqual(
      expect.arrayContaining([
        'Take the migration lock',
        'Phase 2: dual-write on, plan and send windows',
        'Wait for the backfill',
        'Phase 3: verify every window',
        'Done',
      ]),
    );
    const phases = await env.dbs.v2.query(
      `SELECT phase, status FROM migration_control.phase_runs ORDER BY id`,
    );
    expect(phases.rows).toEqual([
      { phase: 'PREPARE', status: 'done' },
      { phase: 'BACKFILL', status: 'done' },
      { phase: 'VERIFY', status: 'done' },
    ]);
  });

  it('retries what the error itself says is retryable: a throttled alarm lookup again, an access-denied one never', async () => {
    const failingLock = (retryable: boolean) => {
      const attempts = { count: 0 };
      const machines = new LocalStateMachines(definitions, env.deps, {
        ...fastWaits,
        wrapTask: async (event, run) => {
          if (event.task === 'begin') {
            attempts.count++;
            throw new AlarmLookupError(
              ['MigrationHealth'],
              retryable ? 'Throttling (injected)' : 'AccessDenied (injected)',
              {
                retryable,
              },
            );
          }
          return run();
        },
      });
      return { attempts, run: () => machines.run('migration', { action: 'advance' }) };
    };
    const lastFailure = async () =>
      (
        await env.dbs.v2.query(
          `SELECT details FROM migration_control.audit_log WHERE action = 'execution.failed' ORDER BY id DESC LIMIT 1`,
        )
      ).rows[0].details;

    const denied = failingLock(false);
    const deniedRun = await denied.run();
    expect(denied.attempts.count).toBe(1);
    expect(deniedRun).toMatchObject({ status: 'FAILED', error: 'AlarmLookupError', retries: [] });
    expect(deniedRun.cause).toMatch(/AccessDenied \(injected\)/);
    expect(await lastFailure()).toMatchObject({ error: 'AlarmLookupError' });

    // Retried (three times, as the Retry says), then failed under its own name, not the retry's.
    const throttled = failingLock(true);
    const throttledRun = await throttled.run();
    expect(throttled.attempts.count).toBe(4);
    expect(throttledRun.retries).toEqual(Array(3).fill('Take the migration lock'));
    expect(throttledRun).toMatchObject({ status: 'FAILED', error: 'AlarmLookupError' });
    expect(throttledRun.cause).toMatch(/^Cannot read the alarms MigrationHealth: Throttling \(injected\)$/);
    expect(await lastFailure()).toMatchObject({ error: 'AlarmLookupError' });
  });

  it("every orchestrator task's Retry names the retryable-error name and Lambda's transient errors, never a class", () => {
    const classNames = Object.values(errors)
      .filter((v): v is typeof MigrationError => typeof v === 'function' && v.prototype instanceof Error)
      .map((c) => c.name)
      .filter((name) => name !== RETRYABLE_TASK_ERROR);
    expect(classNames).toEqual(expect.arrayContaining(['TransientDatabaseError', 'AlarmLookupError']));
    let tasks = 0;
    for (const definition of [definitions.migration, definitions.cutover, definitions.rollback]) {
      const states = (
        definition as {
          States: Record<string, { Type: string; Resource?: string; Retry?: { ErrorEquals: string[] }[] }>;
        }
      ).States;
      for (const state of Object.values(states)) {
        if (state.Type !== 'Task' || state.Resource?.includes(':states:::states:')) continue;
        const retried = (state.Retry ?? []).flatMap((r) => r.ErrorEquals);
        const ours = [...new Set(retried.filter((e) => !e.startsWith('Lambda.')))];
        expect(ours.filter((e) => classNames.includes(e))).toEqual([]);
        // 'Validate input' retries Lambda's own errors only: a bad input stays bad.
        if (ours.length === 0) continue;
        expect(ours).toEqual([RETRYABLE_TASK_ERROR]);
        tasks++;
      }
    }
    expect(tasks).toBeGreaterThan(20);
  });

  it('catches a fatal error into the failure path, recording it', async () => {
    const machines = new LocalStateMachines(definitions, env.deps, fastWaits);
    const run = await machines.run('migration', { action: 'advance' });
    // Cutover is next, and it runs in its own state machine.
    expect(run).toMatchObject({ status: 'FAILED', error: 'CutoverIsNext' });
    expect(run.path.slice(-3)).toEqual(['Cutover is next', 'Record the failure', 'Failed']);
    const failed = await env.dbs.v2.query(
      `SELECT details FROM migration_control.audit_log WHERE action = 'execution.failed' ORDER BY id DESC LIMIT 1`,
    );
    expect(failed.rows[0].details.error).toBe('CutoverIsNext');
  });

  it('rolls back through the Rollback state machine when the gate is unhealthy at 25 %', async () => {
    let gates = 0;
    const machines = new LocalStateMachines(definitions, env.deps, {
      ...fastWaits,
      wrapTask: async (event, run) => {
        if (event.task === 'health-gate' && ++gates === 2)
          env.alarms.raise('BackendErrorRate', 'errors above 5 %');
        return run();
      },
    });
    const run = await machines.run('cutover', { action: 'run' });
    expect(run).toMatchObject({
      status: 'FAILED',
      error: 'HealthGateFailed',
      cause: 'alarm:BackendErrorRate',
    });
    expect(run.path).toContain('Start the Rollback');
    expect(env.parameters.entries()[TRAFFIC]).toBe('0');
    const audit = await env.dbs.v2.query(
      `SELECT actor, details FROM migration_control.audit_log WHERE action = 'rollback.done' ORDER BY id DESC LIMIT 1`,
    );
    // The actor is the Rollback execution that acted; the gate's reason says who asked.
    expect(audit.rows[0].actor).toMatch(/^arn:aws:states:local-1:\d{12}:execution:rollback:/);
    expect(audit.rows[0].details).toMatchObject({ from: 25, to: 0, requestedBy: 'alarm:BackendErrorRate' });
    env.alarms.clear();
  });

  it('starts the same Rollback from the alarm rule’s input', async () => {
    const machines = new LocalStateMachines(definitions, env.deps, fastWaits);
    await env.parameters.put(TRAFFIC, '50');
    const run = await machines.run('rollback', {
      reason: 'alarm:IotV2Migration-MigrationHealth',
      actor: 'alarm',
    });
    expect(run.status).toBe('SUCCEEDED');
    expect(env.parameters.entries()[TRAFFIC]).toBe('0');
    const audit = await env.dbs.v2.query(
      `SELECT actor, details FROM migration_control.audit_log WHERE action = 'rollback.done' ORDER BY id DESC LIMIT 1`,
    );
    // Free text in the input never becomes the actor: the execution's ARN does.
    expect(audit.rows[0].actor).toBe(run.executionId);
    expect(audit.rows[0].details).toMatchObject({
      requestedBy: 'alarm',
      reason: 'alarm:IotV2Migration-MigrationHealth',
    });
  });

  it('walks the happy path: cutover to 100 %, then cleanup, then status', async () => {
    const machines = new LocalStateMachines(definitions, env.deps, fastWaits);
    // The failed cutover left a stale verification behind the rollback: verify again first.
    await env.dbs.v2.query(
      `UPDATE migration_control.verification_runs SET finished_at = now() WHERE status = 'passed'`,
    );
    const cut = await machines.run('cutover', { action: 'run' });
    expect(cut.status).toBe('SUCCEEDED');
    expect(cut.path.filter((s) => s === 'Health gate: alarms and drift')).toHaveLength(4);
    expect(env.parameters.entries()[TRAFFIC]).toBe('100');
    const switched = await machines.run('cutover', { action: 'switch-writes' });
    expect([switched.status, switched.cause]).toEqual(['SUCCEEDED', undefined]);
    expect(switched.path).toContain('Write switch: verify touched windows, V2 the write primary');
    const before = await rowCounts(env.dbs.v1, 'public');
    // Without its confirmation, cleanup is refused before it changes anything.
    const unconfirmed = await machines.run('migration', { action: 'advance' });
    expect(unconfirmed).toMatchObject({ status: 'FAILED', error: 'ConfirmationRequiredError' });
    expect(unconfirmed.cause).toContain('"confirm": "RENAME V1 TABLES"');
    expect(env.parameters.entries()['/iot-migration/dual-write']).toBe('on');
    expect(await rowCounts(env.dbs.v1, 'public')).toEqual(before);
    const cleanup = await machines.run('migration', { action: 'advance', confirm: 'RENAME V1 TABLES' });
    expect(cleanup.status).toBe('SUCCEEDED');
    expect(cleanup.path).toEqual(
      expect.arrayContaining(['Phase 5: stop dual-write, archive V1', 'Check the archive, rename V1 tables']),
    );
    const after = await rowCounts(env.dbs.v1, 'public');
    expect(after.device_data_v1_archived).toBe(before.device_data);
    const status = await machines.run('migration', { action: 'status' });
    expect(status.status).toBe('SUCCEEDED');
    const output = status.output as {
      phases: { status: string }[];
      checklist: { item: string; done: boolean }[];
    };
    expect(output.phases.map((p) => p.status)).toEqual(['done', 'done', 'done', 'done', 'done']);
    expect(output.checklist.find((c) => c.item === 'rollback rehearsed')?.done).toBe(true);
    expect(output.checklist.find((c) => c.item === 'writes switched to V2 (V1 mirrored)')?.done).toBe(true);
  });

  it('drops the archives from the console input only after the retention and with the confirmation', async () => {
    const machines = new LocalStateMachines(definitions, env.deps, fastWaits);
    const early = await machines.run('migration', { action: 'drop-archives', confirm: 'DROP V1 ARCHIVES' });
    expect(early).toMatchObject({ status: 'FAILED', error: 'GuardRefusedError' });
    expect(early.cause).toMatch(/retention period of 14 days runs until/);
    expect(await rowCounts(env.dbs.v1, 'public')).toHaveProperty('device_data_v1_archived');
    const missing = await machines.run('migration', { action: 'drop-archives' });
    expect(missing).toMatchObject({ status: 'FAILED', error: 'InvalidInputError' });
    expect(missing.cause).toMatch(/confirm/);

    // The retention is over (as configured here): the confirmed drop runs under the lock.
    const retention0 = { ...env.deps, config: { ...env.deps.config, cleanup: { retentionDays: 0 } } };
    const later = new LocalStateMachines(definitions, retention0, fastWaits);
    const wrong = await later.run('migration', { action: 'drop-archives', confirm: 'drop them' });
    expect(wrong).toMatchObject({ status: 'FAILED', error: 'GuardRefusedError' });
    expect(wrong.cause).toMatch(/confirmation must be exactly "DROP V1 ARCHIVES"/);
    const dropped = await later.run('migration', { action: 'drop-archives', confirm: 'DROP V1 ARCHIVES' });
    expect(dropped.status).toBe('SUCCEEDED');
    expect(dropped.path).toEqual([
      'Validate input',
      'Which action?',
      'Take the lock to drop archives',
      'Drop the archived V1 tables',
      'Release the lock (archives dropped)',
      'Archives dropped',
    ]);
    expect(await rowCounts(env.dbs.v1, 'public')).toEqual({});
    const lock = await env.dbs.v2.query('SELECT holder FROM migration_control.migration_lock');
    expect(lock.rows[0].holder).toBeNull();
  });
});

export type { TestDatabases };

describe('ops driving the cutover one level at a time, holding and resuming', () => {
  let env: Awaited<ReturnType<typeof environment>>;
  beforeAll(async () => {
    env = await environment('sfn_ops');
    const machines = new LocalStateMachines(definitions, env.deps, fastWaits);
    expect((await machines.run('migration', { action: 'advance', through: 'VERIFY' })).status).toBe(
      'SUCCEEDED',
    );
  });
  afterAll(() => env.close());

  it('steps, holds, resumes and carries a run on from the level reached', async () => {
    let resumed = false;
    let heldPolls = 0;
    const machines = new LocalStateMachines(definitions, env.deps, {
      ...fastWaits,
      wrapTask: async (event, run) => {
        const result = await run();
        // While the run waits on the hold, ops resume it (a separate execution on AWS).
        if (event.task === 'cutover-next' && result.state === 'held' && ++heldPolls === 3) {
          const resume = await new LocalStateMachines(definitions, env.deps, fastWaits).run('cutover', {
            action: 'resume',
          });
          resumed = resume.status === 'SUCCEEDED';
        }
        return result;
      },
    });
    expect((await machines.run('cutover', { action: 'step' })).output).toMatchObject({
      percentage: 10,
      stepped: true,
    });
    expect((await machines.run('cutover', { action: 'step' })).output).toMatchObject({
      percentage: 25,
      stepped: true,
    });
    expect(env.parameters.entries()[TRAFFIC]).toBe('25');
    expect((await machines.run('cutover', { action: 'hold' })).status).toBe('SUCCEEDED');
    const refused = await machines.run('cutover', { action: 'step' });
    expect(refused).toMatchObject({ status: 'FAILED', error: 'GuardRefusedError' });
    expect(refused.cause).toMatch(/the cutover is held/);

    const run = await machines.run('cutover', { action: 'run' });
    expect(run.status).toBe('SUCCEEDED');
    expect(resumed).toBe(true);
    expect(run.path).toContain('Held: wait');
    expect(env.parameters.entries()[TRAFFIC]).toBe('100');
    const levels = await env.dbs.v2.query(
      `SELECT details->>'to' AS to FROM migration_control.audit_log
        WHERE action = 'parameter.set' AND details->>'name' = $1 ORDER BY id`,
      [TRAFFIC],
    );
    // Carried on from 25 %: no level was set twice.
    expect(levels.rows.map((r) => r.to)).toEqual(['10', '25', '50', '100']);
  });
});

/** Resolves once `check` holds, polling (the order of events is explicit, never a race). */
async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('an execution stopped from the console (no Catch runs) and the migration lock', () => {
  let env: Awaited<ReturnType<typeof environment>>;
  beforeAll(async () => {
    env = await environment('sfn_stop');
  });
  afterAll(() => env.close());

  const lockHolder = async () =>
    (await env.dbs.v2.query('SELECT holder FROM migration_control.migration_lock')).rows[0].holder as
      string | null;
  const audit = async (action: string) =>
    (
      await env.dbs.v2.query<{ actor: string; details: Record<string, unknown> }>(
        'SELECT actor, details FROM migration_control.audit_log WHERE action = $1 ORDER BY id',
        [action],
      )
    ).rows;

  /**
   * Starts `advance through BACKFILL` with a queue that delivers nothing, so that the execution
   * polls the backfill until it is stopped; resolves once it polls.
   */
  async function startPolling(options: { statusChangeRule?: boolean } = {}) {
    let polling = false;
    const deps = {
      ...env.deps,
      queue: { sendAll: async (b: readonly string[]) => ({ sent: b.length, calls: 1 }) },
    };
    const machines = new LocalStateMachines(definitions, deps, {
      ...fastWaits,
      ...options,
      onState: (_, state) => {
        if (state === 'Wait for the backfill') polling = true;
      },
    });
    const stop = new AbortController();
    const done = machines.run(
      'migration',
      { action: 'advance', through: 'BACKFILL' },
      undefined,
      stop.signal,
    );
    await until(() => polling, 'the backfill poll loop');
    return { machines, stop, done };
  }

  it('refuses a second run while the first runs; stopping the first releases its lock through the status-change rule', async () => {
    const first = await startPolling();
    const holder = await lockHolder();
    expect(holder).toMatch(/:execution:migration:/);

    const second = await first.machines.run('migration', { action: 'advance' });
    expect(second).toMatchObject({ status: 'FAILED', error: 'MigrationLockedError' });
    expect(second.cause).toContain(`locked by ${holder}`);
    expect(second.cause).toContain('(RUNNING)');
    expect(await lockHolder()).toBe(holder);

    first.stop.abort(new Error('Stop execution, from the console'));
    const stopped = await first.done;
    expect(stopped.status).toBe('ABORTED');
    expect(stopped.executionId).toBe(holder);
    // No Catch ran: only the status-change rule can release the lock.
    expect(stopped.path).not.toContain('Record the failure');
    expect(await lockHolder()).toBeNull();
    expect((await audit('execution.ended')).filter((a) => a.actor === holder)).toEqual([
      {
        actor: holder,
        details: expect.objectContaining({ status: 'ABORTED', lockReleased: true }),
      },
    ]);
  });

  it('when the rule’s event is missed, the next run takes the stopped execution’s lock over', async () => {
    const first = await startPolling({ statusChangeRule: false });
    const holder = (await lockHolder())!;
    first.stop.abort(new Error('Stop execution, from the console'));
    expect((await first.done).status).toBe('ABORTED');
    expect(await lockHolder()).toBe(holder);

    const next = await new LocalStateMachines(definitions, env.deps, fastWaits).run('migration', {
      action: 'advance',
      through: 'PREPARE',
    });

    expect(next.status).toBe('SUCCEEDED');
    expect(await lockHolder()).toBeNull();
    const takeover = (await audit('lock.taken-over')).at(-1)!;
    expect(takeover.actor).toBe(next.executionId);
    expect(takeover.details).toMatchObject({ from: holder, holderStatus: expect.stringMatching(/^ENDED/) });
  });
});
