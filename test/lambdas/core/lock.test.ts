import { SFNClient, DescribeExecutionCommand } from '@aws-sdk/client-sfn';
import { mockClient } from 'aws-sdk-client-mock';
import { SfnExecutions } from '../../../lambdas/adapters/aws/sfn-executions';
import { MemoryParameters } from '../../../lambdas/adapters/local/memory-parameters';
import { MigrationLockedError } from '../../../lambdas/core/errors';
import {
  acquireLock,
  beginPhase,
  endPhase,
  ensureControlSchema,
  releaseLock,
  type MigrationContext,
} from '../../../lambdas/core/migration-state';
import { orchestrate, type OrchestratorDeps } from '../../../lambdas/core/orchestrator';
import type { ExecutionsPort, HolderState } from '../../../lambdas/ports/executions';
import { testConfig } from '../../support/fixtures';
import { freshDatabases, type TestDatabases } from '../../support/pg';

/** An executions port that answers from a table of holders (anything else: cannot tell). */
class KnownHolders implements ExecutionsPort {
  asked: string[] = [];
  constructor(readonly states: Record<string, HolderState>) {}
  async holderState(holder: string): Promise<HolderState> {
    this.asked.push(holder);
    return this.states[holder] ?? { alive: undefined, status: 'unknown' };
  }
}

const ARN = (name: string) => `arn:aws:states:eu-west-1:123456789012:execution:Migration-AbC:${name}`;

const sfn = mockClient(SFNClient);
afterEach(() => sfn.reset());

let dbs: TestDatabases;
let base: Omit<MigrationContext, 'actor'>;
beforeAll(async () => {
  dbs = await freshDatabases('lock');
  base = {
    v1: dbs.v1,
    v2: dbs.v2,
    config: testConfig(dbs),
    parameters: new MemoryParameters(),
  };
  await ensureControlSchema(base);
});
afterAll(() => dbs.drop());
afterEach(() =>
  dbs.v2.query(
    'UPDATE migration_control.migration_lock SET holder = NULL, acquired_at = NULL, expires_at = NULL',
  ),
);

const lock = async () =>
  (await dbs.v2.query('SELECT holder, expires_at FROM migration_control.migration_lock')).rows[0] as {
    holder: string | null;
    expires_at: Date | null;
  };
const audits = async (action: string) =>
  (
    await dbs.v2.query<{ actor: string; details: Record<string, unknown> }>(
      'SELECT actor, details FROM migration_control.audit_log WHERE action = $1 ORDER BY id',
      [action],
    )
  ).rows;

describe('the migration lock and its holder’s liveness', () => {
  it('takes a dead holder’s lock over at once, with an audit event naming the holder and its end', async () => {
    const executions = new KnownHolders({ [ARN('stopped')]: { alive: false, status: 'ABORTED' } });
    await acquireLock({ ...base, actor: ARN('stopped') });
    const before = (await audits('lock.taken-over')).length;

    await acquireLock({ ...base, executions, actor: ARN('next') });

    expect((await lock()).holder).toBe(ARN('next'));
    expect(executions.asked).toEqual([ARN('stopped')]);
    const taken = (await audits('lock.taken-over')).slice(before);
    expect(taken).toEqual([
      {
        actor: ARN('next'),
        details: expect.objectContaining({ from: ARN('stopped'), holderStatus: 'ABORTED' }),
      },
    ]);
  });

  it('refuses while the holder still runs, saying so, and leaves the lock as it was', async () => {
    const executions = new KnownHolders({ [ARN('running')]: { alive: true, status: 'RUNNING' } });
    await acquireLock({ ...base, actor: ARN('running') });
    const held = await lock();

    const error = await acquireLock({ ...base, executions, actor: ARN('second') }).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(MigrationLockedError);
    expect((error as MigrationLockedError).holder).toBe(ARN('running'));
    expect((error as MigrationLockedError).holderStatus).toBe('RUNNING');
    expect((error as Error).message).toMatch(/locked by .*running since .* \(RUNNING\)/);
    expect(await lock()).toEqual(held);
  });

  it('refuses when nobody can tell whether the holder runs (the time to live decides)', async () => {
    await acquireLock({ ...base, actor: 'person:alice' });
    const error = await acquireLock({ ...base, executions: new KnownHolders({}), actor: ARN('x') }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(MigrationLockedError);
    expect((await lock()).holder).toBe('person:alice');
  });

  it('lets exactly one of two runs take over the same dead holder', async () => {
    const executions = new KnownHolders({ [ARN('crashed')]: { alive: false, status: 'FAILED' } });
    await acquireLock({ ...base, actor: ARN('crashed') });
    const results = await Promise.allSettled([
      acquireLock({ ...base, executions, actor: ARN('a') }),
      acquireLock({ ...base, executions, actor: ARN('b') }),
    ]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(refused.reason).toBeInstanceOf(MigrationLockedError);
    expect([ARN('a'), ARN('b')]).toContain((await lock()).holder);
  });

  it('releases only its own lock', async () => {
    await acquireLock({ ...base, actor: ARN('one') });
    expect(await releaseLock({ ...base, actor: ARN('two') })).toBe(false);
    expect((await lock()).holder).toBe(ARN('one'));
    expect(await releaseLock({ ...base, actor: ARN('one') })).toBe(true);
  });
});

describe('on AWS: the orchestrator’s tasks with DescribeExecution at the SDK boundary', () => {
  const deps = (): OrchestratorDeps => ({
    ...base,
    queue: { sendAll: async (b) => ({ sent: b.length, calls: 1 }) },
    executions: new SfnExecutions(new SFNClient({ region: 'eu-west-1' })),
  });

  it('takes over from an execution stopped in the console (ABORTED), which ran no Catch', async () => {
    await acquireLock({ ...base, actor: ARN('stopped-in-console') });
    sfn
      .on(DescribeExecutionCommand, { executionArn: ARN('stopped-in-console') })
      .resolves({ status: 'ABORTED' });

    const out = await orchestrate(deps(), {
      task: 'begin',
      actor: ARN('advance'),
      request: { through: 'PREPARE' },
    });

    expect(out).toEqual({ target: 'PREPARE' });
    expect((await lock()).holder).toBe(ARN('advance'));
    expect(sfn.commandCalls(DescribeExecutionCommand)).toHaveLength(1);
    expect((await audits('lock.taken-over')).at(-1)?.details).toMatchObject({
      from: ARN('stopped-in-console'),
      holderStatus: 'ABORTED',
    });
  });

  it('refuses while DescribeExecution says RUNNING', async () => {
    await acquireLock({ ...base, actor: ARN('busy') });
    sfn.on(DescribeExecutionCommand).resolves({ status: 'RUNNING' });
    await expect(orchestrate(deps(), { task: 'begin', actor: ARN('advance'), request: {} })).rejects.toThrow(
      MigrationLockedError,
    );
    expect((await lock()).holder).toBe(ARN('busy'));
  });

  it('records the end the status-change rule reports and releases only that execution’s lock', async () => {
    await acquireLock({ ...base, actor: ARN('timed-out') });
    const other = await orchestrate(deps(), {
      task: 'execution-ended',
      actor: ARN('someone-else'),
      status: 'ABORTED',
    });
    expect(other).toMatchObject({ lockReleased: false });
    expect((await lock()).holder).toBe(ARN('timed-out'));

    const out = await orchestrate(deps(), {
      task: 'execution-ended',
      actor: ARN('timed-out'),
      status: 'TIMED_OUT',
    });

    expect(out).toMatchObject({ lockReleased: true, recorded: true });
    expect((await lock()).holder).toBeNull();
    expect((await audits('execution.ended')).at(-1)).toEqual({
      actor: ARN('timed-out'),
      details: { status: 'TIMED_OUT', lockReleased: true },
    });
    expect(sfn.commandCalls(DescribeExecutionCommand)).toHaveLength(0);
  });
});

describe('SfnExecutions', () => {
  const port = () => new SfnExecutions(new SFNClient({ region: 'eu-west-1' }));

  it.each(['ABORTED', 'FAILED', 'TIMED_OUT', 'SUCCEEDED'] as const)('calls %s dead', async (status) => {
    sfn.on(DescribeExecutionCommand).resolves({ status });
    expect(await port().holderState(ARN('x'))).toEqual({ alive: false, status });
  });

  it('calls RUNNING and PENDING_REDRIVE alive', async () => {
    sfn
      .on(DescribeExecutionCommand)
      .resolvesOnce({ status: 'RUNNING' })
      .resolvesOnce({ status: 'PENDING_REDRIVE' });
    expect((await port().holderState(ARN('x'))).alive).toBe(true);
    expect((await port().holderState(ARN('x'))).alive).toBe(true);
  });

  it('calls an execution that no longer exists dead, and cannot tell on any other error or holder', async () => {
    const gone = Object.assign(new Error('gone'), { name: 'ExecutionDoesNotExist' });
    const denied = Object.assign(new Error('no'), { name: 'AccessDeniedException' });
    sfn.on(DescribeExecutionCommand).rejectsOnce(gone).rejectsOnce(denied);
    expect(await port().holderState(ARN('x'))).toEqual({ alive: false, status: 'DOES_NOT_EXIST' });
    expect(await port().holderState(ARN('x'))).toEqual({
      alive: undefined,
      status: 'DescribeExecution failed: AccessDeniedException',
    });
    expect((await port().holderState('person:alice')).alive).toBeUndefined();
    expect(sfn.commandCalls(DescribeExecutionCommand)).toHaveLength(2);
  });
});

describe('a phase’s bookkeeping', () => {
  // Makes the audit insert of one action fail, as a process killed right before it would leave it out.
  const refuse = async (action: string | null) => {
    await dbs.v2.query(`DROP TRIGGER IF EXISTS refuse_audit ON migration_control.audit_log`);
    if (action === null) return;
    await dbs.v2.query(
      `CREATE OR REPLACE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN IF NEW.action = TG_ARGV[0] THEN RAISE EXCEPTION 'audit refused'; END IF; RETURN NEW; END $$`,
    );
    await dbs.v2.query(
      `CREATE TRIGGER refuse_audit BEFORE INSERT ON migration_control.audit_log
       FOR EACH ROW EXECUTE FUNCTION refuse_audit('${action}')`,
    );
  };
  const runs = async () =>
    (
      await dbs.v2.query<{ status: string }>(
        `SELECT status FROM migration_control.phase_runs WHERE phase = 'PREPARE'`,
      )
    ).rows;
  const state = async () =>
    (
      await dbs.v2.query<{ phase: string | null; status: string }>(
        `SELECT phase, status FROM migration_control.migration_state`,
      )
    ).rows[0];
  afterAll(() => refuse(null));

  it('records a phase’s start and end with their audit events, or not at all', async () => {
    const ctx = { ...base, actor: 'person:test' };
    const before = await state();
    await refuse('phase.started');
    await expect(beginPhase(ctx, 'PREPARE')).rejects.toThrow(/audit refused/);
    expect(await runs()).toEqual([]);
    expect(await state()).toEqual(before);

    await refuse(null);
    expect(await beginPhase(ctx, 'PREPARE')).toBe('started');
    expect(await runs()).toEqual([{ status: 'running' }]);
    expect(await audits('phase.started')).toHaveLength(1);

    await refuse('phase.done');
    await expect(endPhase(ctx, 'PREPARE')).rejects.toThrow(/audit refused/);
    expect(await runs()).toEqual([{ status: 'running' }]);
    expect(await state()).toMatchObject({ phase: 'PREPARE', status: 'running' });

    await refuse(null);
    await endPhase(ctx, 'PREPARE');
    expect(await runs()).toEqual([{ status: 'done' }]);
    expect(await audits('phase.done')).toHaveLength(1);
  });
});
